"""boto3 against a running dw-s3. Run by tests/clients.rs:
python3 boto3_suite.py ENDPOINT ALICE_KEY ALICE_SECRET BOB_KEY BOB_SECRET WORKDIR

Prints one line per check and exits non-zero on the first failure.
"""

import hashlib
import os
import sys
import time
import urllib.error
import urllib.request

import boto3
from boto3.s3.transfer import TransferConfig
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint, ak, sk, bk, bs, work = sys.argv[1:7]
cfg = Config(s3={"addressing_style": "path"}, signature_version="s3v4", retries={"max_attempts": 1})


def client(key, secret, config=cfg):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=config,
    )


s3 = client(ak, sk)
bob = client(bk, bs)


def ok(msg):
    print("ok:", msg, flush=True)


def expect_error(code, fn, *a, **kw):
    try:
        fn(*a, **kw)
    except ClientError as e:
        got = e.response["Error"]["Code"]
        assert got == code, f"expected {code}, got {got}: {e}"
        return e
    raise AssertionError(f"expected {code}, call succeeded")


# --- buckets
s3.create_bucket(Bucket="boto")
names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
assert "boto" in names, names
s3.head_bucket(Bucket="boto")
loc = s3.get_bucket_location(Bucket="boto")
assert loc.get("LocationConstraint") in (None, ""), loc
expect_error("BucketAlreadyOwnedByYou", s3.create_bucket, Bucket="boto")
expect_error("BucketAlreadyExists", bob.create_bucket, Bucket="boto")
expect_error("InvalidBucketName", s3.create_bucket, Bucket="Bad_Name")
s3.create_bucket(Bucket="boto-tmp")
s3.delete_bucket(Bucket="boto-tmp")
expect_error("404", s3.head_bucket, Bucket="boto-tmp")
ok("bucket lifecycle")

# --- objects, metadata, ranges
data = os.urandom(300_000)
r = s3.put_object(Bucket="boto", Key="dir/obj.bin", Body=data, ContentType="application/x-test",
                  Metadata={"color": "blue", "owner": "alice"})
assert r["ETag"].strip('"') == hashlib.md5(data).hexdigest(), r["ETag"]
h = s3.head_object(Bucket="boto", Key="dir/obj.bin")
assert h["ContentLength"] == len(data)
assert h["ContentType"] == "application/x-test"
assert h["Metadata"] == {"color": "blue", "owner": "alice"}, h["Metadata"]
g = s3.get_object(Bucket="boto", Key="dir/obj.bin")
assert g["Body"].read() == data
assert g["Metadata"]["color"] == "blue"
g = s3.get_object(Bucket="boto", Key="dir/obj.bin", Range="bytes=1000-1999")
assert g["Body"].read() == data[1000:2000]
assert g["ContentRange"] == f"bytes 1000-1999/{len(data)}", g["ContentRange"]
g = s3.get_object(Bucket="boto", Key="dir/obj.bin", Range="bytes=-100")
assert g["Body"].read() == data[-100:]
expect_error("InvalidRange", s3.get_object, Bucket="boto", Key="dir/obj.bin", Range="bytes=999999-")
expect_error("NoSuchKey", s3.get_object, Bucket="boto", Key="nope")
expect_error("NoSuchBucket", s3.get_object, Bucket="nobucket", Key="nope")
for odd in ["../../escape", "a b+c%d/ü", "trailing/", "x/./y"]:
    s3.put_object(Bucket="boto", Key=odd, Body=b"odd")
    assert s3.get_object(Bucket="boto", Key=odd)["Body"].read() == b"odd", odd
s3.put_object(Bucket="boto", Key="empty", Body=b"")
assert s3.get_object(Bucket="boto", Key="empty")["Body"].read() == b""
ok("put/get/head, metadata, ranges, odd keys")

# --- copy
c = s3.copy_object(Bucket="boto", Key="copy.bin", CopySource={"Bucket": "boto", "Key": "dir/obj.bin"})
assert c["CopyObjectResult"]["ETag"].strip('"') == hashlib.md5(data).hexdigest()
assert s3.get_object(Bucket="boto", Key="copy.bin")["Body"].read() == data
assert s3.head_object(Bucket="boto", Key="copy.bin")["Metadata"]["color"] == "blue"
s3.copy_object(Bucket="boto", Key="copy.bin", CopySource={"Bucket": "boto", "Key": "copy.bin"},
               MetadataDirective="REPLACE", Metadata={"color": "red"})
assert s3.head_object(Bucket="boto", Key="copy.bin")["Metadata"] == {"color": "red"}
expect_error("InvalidRequest", s3.copy_object, Bucket="boto", Key="copy.bin",
             CopySource={"Bucket": "boto", "Key": "copy.bin"})
ok("copy")

# --- listing v1/v2 with prefix, delimiter, pagination over > 1000 keys
s3.create_bucket(Bucket="many")
for i in range(1100):
    s3.put_object(Bucket="many", Key=f"k/{i:05d}", Body=b"")
for d in ("a", "b", "c"):
    for j in range(3):
        s3.put_object(Bucket="many", Key=f"tree/{d}/{j}", Body=b"x")
s3.put_object(Bucket="many", Key="tree/top", Body=b"x")
p = s3.get_paginator("list_objects_v2")
keys = [o["Key"] for page in p.paginate(Bucket="many", Prefix="k/") for o in page.get("Contents", [])]
assert keys == [f"k/{i:05d}" for i in range(1100)], len(keys)
first = s3.list_objects_v2(Bucket="many", Prefix="k/")
assert first["KeyCount"] == 1000 and first["IsTruncated"], first["KeyCount"]
small = [o["Key"] for page in p.paginate(Bucket="many", Prefix="tree/", PaginationConfig={"PageSize": 2})
         for o in page.get("Contents", [])]
assert len(small) == 10, small
d = s3.list_objects_v2(Bucket="many", Prefix="tree/", Delimiter="/")
assert [c["Prefix"] for c in d["CommonPrefixes"]] == ["tree/a/", "tree/b/", "tree/c/"], d
assert [o["Key"] for o in d["Contents"]] == ["tree/top"]
sa = s3.list_objects_v2(Bucket="many", Prefix="k/", StartAfter="k/01095")
assert [o["Key"] for o in sa["Contents"]] == ["k/01096", "k/01097", "k/01098", "k/01099"]
p1 = s3.get_paginator("list_objects")
keys1 = [o["Key"] for page in p1.paginate(Bucket="many", Prefix="k/", PaginationConfig={"PageSize": 300})
         for o in page.get("Contents", [])]
assert keys1 == keys, len(keys1)
d1 = s3.list_objects(Bucket="many", Prefix="tree/", Delimiter="/", MaxKeys=2)
assert d1["IsTruncated"] and len(d1.get("CommonPrefixes", [])) == 2, d1
expect_error("InvalidArgument", s3.list_objects_v2, Bucket="many", ContinuationToken="garbage")
ok("list v1/v2: prefix, delimiter, pagination over 1100 keys")

# --- multi-delete
resp = s3.delete_objects(Bucket="many", Delete={"Objects": [{"Key": f"k/{i:05d}"} for i in range(1000)]})
assert len(resp["Deleted"]) == 1000 and not resp.get("Errors"), resp.get("Errors")
left = s3.list_objects_v2(Bucket="many", Prefix="k/")
assert left["KeyCount"] == 100, left["KeyCount"]
expect_error("BucketNotEmpty", s3.delete_bucket, Bucket="many")
ok("multi-delete")

# --- multipart 200 MiB with boto3's transfer manager
big = os.path.join(work, "big.bin")
with open(big, "wb") as f:
    for i in range(200):
        f.write(hashlib.sha256(str(i).encode()).digest() * 32768)  # 1 MiB per iteration
want = hashlib.md5(open(big, "rb").read()).hexdigest()
tc = TransferConfig(multipart_threshold=8 * 1024 * 1024, multipart_chunksize=16 * 1024 * 1024, max_concurrency=4)
s3.upload_file(big, "boto", "big.bin", Config=tc)
h = s3.head_object(Bucket="boto", Key="big.bin")
assert h["ContentLength"] == 200 * 1024 * 1024
assert h["ETag"].strip('"').endswith("-13"), h["ETag"]
out = os.path.join(work, "big.out")
s3.download_file("boto", "big.bin", out, Config=tc)
assert hashlib.md5(open(out, "rb").read()).hexdigest() == want
ok("multipart 200 MiB (boto3), content hash verified")

# --- low-level multipart: list uploads/parts, abort, errors
mp = s3.create_multipart_upload(Bucket="boto", Key="mp")
uid = mp["UploadId"]
part = os.urandom(5 * 1024 * 1024)
e1 = s3.upload_part(Bucket="boto", Key="mp", UploadId=uid, PartNumber=1, Body=part)["ETag"]
e2 = s3.upload_part(Bucket="boto", Key="mp", UploadId=uid, PartNumber=2, Body=b"tail")["ETag"]
ups = s3.list_multipart_uploads(Bucket="boto")
assert [u["UploadId"] for u in ups.get("Uploads", [])] == [uid], ups
parts = s3.list_parts(Bucket="boto", Key="mp", UploadId=uid)["Parts"]
assert [p["PartNumber"] for p in parts] == [1, 2]
expect_error("InvalidPartOrder", s3.complete_multipart_upload, Bucket="boto", Key="mp", UploadId=uid,
             MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}]})
expect_error("InvalidPart", s3.complete_multipart_upload, Bucket="boto", Key="mp", UploadId=uid,
             MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e2}]})
small = s3.create_multipart_upload(Bucket="boto", Key="small")["UploadId"]
s1 = s3.upload_part(Bucket="boto", Key="small", UploadId=small, PartNumber=1, Body=b"tiny")["ETag"]
s2 = s3.upload_part(Bucket="boto", Key="small", UploadId=small, PartNumber=2, Body=b"end")["ETag"]
expect_error("EntityTooSmall", s3.complete_multipart_upload, Bucket="boto", Key="small", UploadId=small,
             MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": s1}, {"PartNumber": 2, "ETag": s2}]})
s3.abort_multipart_upload(Bucket="boto", Key="small", UploadId=small)
s3.complete_multipart_upload(Bucket="boto", Key="mp", UploadId=uid,
                             MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
assert s3.get_object(Bucket="boto", Key="mp")["Body"].read() == part + b"tail"
md5s = hashlib.md5(part).digest() + hashlib.md5(b"tail").digest()
assert s3.head_object(Bucket="boto", Key="mp")["ETag"].strip('"') == hashlib.md5(md5s).hexdigest() + "-2"
mp2 = s3.create_multipart_upload(Bucket="boto", Key="mp2")["UploadId"]
s3.abort_multipart_upload(Bucket="boto", Key="mp2", UploadId=mp2)
expect_error("NoSuchUpload", s3.upload_part, Bucket="boto", Key="mp2", UploadId=mp2, PartNumber=1, Body=b"x")
ok("multipart list/parts/complete/abort and ETag md5-of-md5s")

# --- presigned URLs
url = s3.generate_presigned_url("get_object", Params={"Bucket": "boto", "Key": "dir/obj.bin"}, ExpiresIn=300)
assert urllib.request.urlopen(url).read() == data
purl = s3.generate_presigned_url("put_object", Params={"Bucket": "boto", "Key": "presigned-put"}, ExpiresIn=300)
req = urllib.request.Request(purl, data=b"via presigned put", method="PUT")
urllib.request.urlopen(req).read()
assert s3.get_object(Bucket="boto", Key="presigned-put")["Body"].read() == b"via presigned put"
expired = s3.generate_presigned_url("get_object", Params={"Bucket": "boto", "Key": "dir/obj.bin"}, ExpiresIn=1)
time.sleep(2)
try:
    urllib.request.urlopen(expired)
    raise AssertionError("expired presigned URL accepted")
except urllib.error.HTTPError as e:
    assert e.code == 403, e.code
sig_at = url.index("X-Amz-Signature=") + len("X-Amz-Signature=")
bad = url[:sig_at] + ("0" if url[sig_at] != "0" else "1") + url[sig_at + 1:]
try:
    urllib.request.urlopen(bad)
    raise AssertionError("tampered presigned URL accepted")
except urllib.error.HTTPError as e:
    assert e.code == 403, e.code
ok("presigned GET/PUT, expired and tampered refused")

# --- authentication and per-key permissions
anon = client(None, None, Config(signature_version=UNSIGNED, s3={"addressing_style": "path"}))
expect_error("AccessDenied", anon.get_object, Bucket="boto", Key="dir/obj.bin")
expect_error("AccessDenied", anon.list_buckets)
wrong = client(ak, "not-the-secret")
expect_error("SignatureDoesNotMatch", wrong.get_object, Bucket="boto", Key="dir/obj.bin")
unknown = client("AKIAUNKNOWN", "x")
expect_error("InvalidAccessKeyId", unknown.list_buckets)
expect_error("AccessDenied", bob.get_object, Bucket="boto", Key="dir/obj.bin")
expect_error("AccessDenied", bob.list_objects_v2, Bucket="boto")
expect_error("AccessDenied", bob.put_object, Bucket="boto", Key="x", Body=b"x")
expect_error("AccessDenied", bob.copy_object, Bucket="boto", Key="stolen",
             CopySource={"Bucket": "boto", "Key": "dir/obj.bin"})
bob.create_bucket(Bucket="bob-own")
expect_error("AccessDenied", bob.copy_object, Bucket="bob-own", Key="stolen",
             CopySource={"Bucket": "boto", "Key": "dir/obj.bin"})
assert "boto" not in [b["Name"] for b in bob.list_buckets()["Buckets"]]
ok("authentication and per-key permissions")

# --- unsupported operations
expect_error("NotImplemented", s3.put_bucket_policy, Bucket="boto", Policy="{}")
expect_error("NotImplemented", s3.put_bucket_lifecycle_configuration, Bucket="boto",
             LifecycleConfiguration={"Rules": [{"ID": "r", "Status": "Enabled", "Filter": {"Prefix": ""},
                                                "Expiration": {"Days": 1}}]})
try:
    s3.select_object_content(Bucket="boto", Key="dir/obj.bin", Expression="select * from s3object",
                             ExpressionType="SQL", InputSerialization={"CSV": {}},
                             OutputSerialization={"CSV": {}})
    raise AssertionError("SelectObjectContent succeeded")
except ClientError as e:
    assert e.response["Error"]["Code"] == "NotImplemented", e
expect_error("NotImplemented", s3.get_object, Bucket="boto", Key="dir/obj.bin", VersionId="v1")
ok("unsupported operations answer NotImplemented")

# --- cleanup works
s3.delete_object(Bucket="boto", Key="dir/obj.bin")
expect_error("NoSuchKey", s3.get_object, Bucket="boto", Key="dir/obj.bin")
s3.delete_object(Bucket="boto", Key="never-existed")
ok("delete")
print("BOTO3 SUITE PASSED")
