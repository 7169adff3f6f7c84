"""Steady S3 load for the failure tests: puts objects of random sizes and reads earlier ones
back, verifying every byte, until STOP_FILE exists. Run by tests/failure.rs:

python3 s3_load.py ENDPOINT KEY SECRET BUCKET PREFIX MANIFEST STOP_FILE

Writes MANIFEST (JSON: key -> md5 of every acknowledged put) and exits non-zero on the first
error or mismatch.
"""

import hashlib
import json
import os
import random
import sys

import boto3
from botocore.config import Config

endpoint, key, secret, bucket, prefix, manifest, stop = sys.argv[1:8]
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    aws_access_key_id=key,
    aws_secret_access_key=secret,
    region_name="us-east-1",
    config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                  connect_timeout=10, read_timeout=120),
)
rng = random.Random(prefix)
done = {}
i = 0
while not os.path.exists(stop) and i < 5000:
    size = rng.choice([0, 1, 4096, 65536, 300_000, 1_500_000])
    data = rng.randbytes(size)
    k = f"{prefix}/{i:05d}"
    s3.put_object(Bucket=bucket, Key=k, Body=data)
    done[k] = hashlib.md5(data).hexdigest()
    if i % 3 == 0:
        probe = rng.choice(list(done))
        got = s3.get_object(Bucket=bucket, Key=probe)["Body"].read()
        if hashlib.md5(got).hexdigest() != done[probe]:
            print(f"MISMATCH {probe}", flush=True)
            sys.exit(2)
    i += 1
    with open(manifest + ".tmp", "w") as f:
        json.dump(done, f)
    os.replace(manifest + ".tmp", manifest)
print(f"LOAD OK {len(done)} objects", flush=True)
