"""Reads back every object of the given manifests and compares MD5s.

python3 s3_verify.py ENDPOINT KEY SECRET BUCKET MANIFEST...
"""

import hashlib
import json
import sys

import boto3
from botocore.config import Config

endpoint, key, secret, bucket = sys.argv[1:5]
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    aws_access_key_id=key,
    aws_secret_access_key=secret,
    region_name="us-east-1",
    config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
)
n = 0
for m in sys.argv[5:]:
    for k, want in json.load(open(m)).items():
        got = hashlib.md5(s3.get_object(Bucket=bucket, Key=k)["Body"].read()).hexdigest()
        if got != want:
            print(f"MISMATCH {k}: {got} != {want}", flush=True)
            sys.exit(2)
        n += 1
print(f"VERIFIED {n} objects", flush=True)
