"""The S3-compatible object API with the AWS CLI (`aws s3` and `aws s3api`),
boto3 and hand-signed requests: buckets, objects both ways (small and
multi-MB), listing, S3's errors, virtual-host addressing, streaming
`aws-chunked` bodies with chunk signatures, and kill -9 after an
acknowledged PutObject."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import os
import subprocess
import urllib.parse

import pytest
from botocore.exceptions import ClientError

from support import (
    ACCESS_KEY_ID,
    AWS_CLI,
    CLI_TIMEOUT_S,
    REGION,
    SECRET_ACCESS_KEY,
    error_of,
    unique,
)

# The AWS CLI switches to multipart uploads above this size.
CLI_MULTIPART_THRESHOLD_BYTES = 8 * 1024 * 1024


def bucket_name(prefix: str) -> str:
    return unique(prefix).lower().replace("_", "-")[:63]


def aws(server, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(AWS_CLI), "--endpoint-url", server.endpoint, *args],
        env=server.cli_env(), capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
        cwd=server.home,
    )
    if check:
        assert done.returncode == 0, f"aws {' '.join(args)} failed:\n{done.stderr}"
    return done


def s3(server):
    return server.client("s3")


def test_cli_copies_lists_and_removes(server, tmp_path):
    bucket = bucket_name("cli")
    assert "make_bucket: " + bucket in aws(server, "s3", "mb", f"s3://{bucket}").stdout
    small = tmp_path / "app.env"
    small.write_text("A=1\nB=two words\n")
    large = tmp_path / "large.bin"
    large.write_bytes(os.urandom(6 * 1024 * 1024 + 17))
    aws(server, "s3", "cp", str(small), f"s3://{bucket}/config/app.env")
    aws(server, "s3", "cp", str(large), f"s3://{bucket}/data/large.bin")

    listing = aws(server, "s3", "ls", f"s3://{bucket}/").stdout
    assert "PRE config/" in listing and "PRE data/" in listing
    recursive = aws(server, "s3", "ls", f"s3://{bucket}/", "--recursive").stdout
    assert f"{large.stat().st_size} data/large.bin" in recursive
    assert f"{small.stat().st_size} config/app.env" in recursive
    assert bucket in aws(server, "s3", "ls").stdout

    back_small = tmp_path / "back.env"
    back_large = tmp_path / "back.bin"
    aws(server, "s3", "cp", f"s3://{bucket}/config/app.env", str(back_small))
    aws(server, "s3", "cp", f"s3://{bucket}/data/large.bin", str(back_large))
    assert back_small.read_bytes() == small.read_bytes()
    assert hashlib.sha256(back_large.read_bytes()).digest() == hashlib.sha256(large.read_bytes()).digest()

    # A bucket with objects is not removed; emptied, it is.
    refused = aws(server, "s3api", "delete-bucket", "--bucket", bucket, check=False)
    assert refused.returncode != 0 and "BucketNotEmpty" in refused.stderr
    aws(server, "s3", "rm", f"s3://{bucket}/config/app.env")
    aws(server, "s3", "rm", f"s3://{bucket}/data/large.bin")
    assert aws(server, "s3", "ls", f"s3://{bucket}/", "--recursive", check=False).stdout.strip() == ""
    aws(server, "s3", "rb", f"s3://{bucket}")
    assert bucket not in aws(server, "s3", "ls").stdout


def test_cli_sees_s3_errors(server, tmp_path):
    bucket = bucket_name("errors")
    aws(server, "s3api", "create-bucket", "--bucket", bucket)
    again = aws(server, "s3api", "create-bucket", "--bucket", bucket, check=False)
    assert "BucketAlreadyOwnedByYou" in again.stderr
    for bad in ("ab", "Upper-Case", "under_score", "192.168.5.4"):
        refused = aws(server, "s3api", "create-bucket", "--bucket", bad, check=False)
        assert refused.returncode != 0 and "InvalidBucketName" in refused.stderr, bad
    missing = aws(server, "s3api", "get-object", "--bucket", bucket, "--key", "nope",
                  str(tmp_path / "out"), check=False)
    assert "NoSuchKey" in missing.stderr and "The specified key does not exist." in missing.stderr
    head = aws(server, "s3api", "head-object", "--bucket", bucket, "--key", "nope", check=False)
    assert "404" in head.stderr
    no_bucket = aws(server, "s3api", "list-objects-v2", "--bucket", bucket_name("absent"), check=False)
    assert "NoSuchBucket" in no_bucket.stderr

    listing = s3(server).list_objects_v2(Bucket=bucket)
    assert listing["KeyCount"] == 0


def test_cli_uploads_above_its_multipart_threshold(server, tmp_path):
    bucket = bucket_name("multipart")
    aws(server, "s3", "mb", f"s3://{bucket}")
    big = tmp_path / "big.bin"
    data = os.urandom(2 * CLI_MULTIPART_THRESHOLD_BYTES + 12345)
    big.write_bytes(data)
    aws(server, "s3", "cp", str(big), f"s3://{bucket}/big.bin")
    head = s3(server).head_object(Bucket=bucket, Key="big.bin")
    assert head["ContentLength"] == len(data)
    # S3's multipart ETag: the MD5 of the parts' MD5s, and their count.
    assert head["ETag"].strip('"').endswith("-3"), head["ETag"]
    back = tmp_path / "back.bin"
    aws(server, "s3", "cp", f"s3://{bucket}/big.bin", str(back))
    assert hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(data).digest()
    # No upload or part is left behind: only the object's blob remains.
    blobs = list((server.data_dir / "s3" / "blobs").iterdir())
    assert sum(1 for blob in blobs if blob.stat().st_size == len(data)) == 1


def test_multipart_errors_and_abort(server):
    client = s3(server)
    bucket = bucket_name("parts")
    client.create_bucket(Bucket=bucket)
    upload = client.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    small = client.upload_part(Bucket=bucket, Key="k", UploadId=upload, PartNumber=1, Body=b"a" * 10)
    other = client.upload_part(Bucket=bucket, Key="k", UploadId=upload, PartNumber=2, Body=b"b" * 10)
    with pytest.raises(ClientError) as excinfo:
        client.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": other["ETag"]}, {"PartNumber": 2, "ETag": other["ETag"]}]})
    assert error_of(excinfo)[0] == "InvalidPart"
    with pytest.raises(ClientError) as excinfo:
        client.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": small["ETag"]}, {"PartNumber": 2, "ETag": other["ETag"]}]})
    assert error_of(excinfo)[0] == "EntityTooSmall"
    with pytest.raises(ClientError) as excinfo:
        client.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload, MultipartUpload={
            "Parts": [{"PartNumber": 2, "ETag": small["ETag"]}, {"PartNumber": 1, "ETag": small["ETag"]}]})
    assert error_of(excinfo)[0] == "InvalidPartOrder"
    client.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=upload)
    with pytest.raises(ClientError) as excinfo:
        client.upload_part(Bucket=bucket, Key="k", UploadId=upload, PartNumber=3, Body=b"c")
    assert error_of(excinfo)[0] == "NoSuchUpload"
    # A single small part is a whole object.
    upload = client.create_multipart_upload(Bucket=bucket, Key="one", ContentType="text/plain")["UploadId"]
    part = client.upload_part(Bucket=bucket, Key="one", UploadId=upload, PartNumber=1, Body=b"only part")
    done = client.complete_multipart_upload(Bucket=bucket, Key="one", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    expected = hashlib.md5(bytes.fromhex(part["ETag"].strip('"'))).hexdigest() + "-1"
    assert done["ETag"].strip('"') == expected
    got = client.get_object(Bucket=bucket, Key="one")
    assert got["Body"].read() == b"only part" and got["ContentType"] == "text/plain"


def test_boto3_put_get_list(server):
    client = s3(server)
    bucket = bucket_name("boto")
    client.create_bucket(Bucket=bucket)
    client.head_bucket(Bucket=bucket)
    body = b"0123456789" * 100
    put = client.put_object(Bucket=bucket, Key="a/b/c.txt", Body=body, ContentType="text/plain",
                            Metadata={"owner": "team-a"})
    assert put["ETag"] == '"%s"' % hashlib.md5(body).hexdigest()
    got = client.get_object(Bucket=bucket, Key="a/b/c.txt")
    assert got["Body"].read() == body
    assert got["ContentType"] == "text/plain"
    assert got["Metadata"] == {"owner": "team-a"}
    assert got["ContentLength"] == len(body)
    ranged = client.get_object(Bucket=bucket, Key="a/b/c.txt", Range="bytes=10-19")
    assert ranged["Body"].read() == body[10:20]
    assert ranged["ContentRange"] == f"bytes 10-19/{len(body)}"
    with pytest.raises(ClientError) as excinfo:
        client.get_object(Bucket=bucket, Key="a/b/c.txt", Range=f"bytes={len(body)}-")
    assert error_of(excinfo)[0] == "InvalidRange"
    head = client.head_object(Bucket=bucket, Key="a/b/c.txt")
    assert head["ContentLength"] == len(body) and head["ETag"] == put["ETag"]

    # A wrong Content-MD5 stores nothing.
    with pytest.raises(ClientError) as excinfo:
        client.put_object(Bucket=bucket, Key="bad-md5", Body=b"data",
                          ContentMD5="1B2M2Y8AsgTpgAmY7PhCfg==")
    assert error_of(excinfo)[0] == "BadDigest"
    with pytest.raises(ClientError) as excinfo:
        client.head_object(Bucket=bucket, Key="bad-md5")
    assert excinfo.value.response["Error"]["Code"] == "404"

    keys = ["a/b/c.txt", "a/d.txt", "e.txt", "f/g.txt", "h%weird key+.txt", "z.txt"]
    for key in keys[1:]:
        client.put_object(Bucket=bucket, Key=key, Body=key.encode())
    paginator = client.get_paginator("list_objects_v2")
    pages = list(paginator.paginate(Bucket=bucket, PaginationConfig={"PageSize": 2}))
    assert len(pages) == 3
    assert [item["Key"] for page in pages for item in page.get("Contents", [])] == sorted(keys)
    rolled = client.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [prefix["Prefix"] for prefix in rolled["CommonPrefixes"]] == ["a/", "f/"]
    assert [item["Key"] for item in rolled["Contents"]] == ["e.txt", "h%weird key+.txt", "z.txt"]
    under_a = client.list_objects_v2(Bucket=bucket, Prefix="a/", Delimiter="/")
    assert [prefix["Prefix"] for prefix in under_a["CommonPrefixes"]] == ["a/b/"]
    assert [item["Key"] for item in under_a["Contents"]] == ["a/d.txt"]
    assert client.get_object(Bucket=bucket, Key="h%weird key+.txt")["Body"].read() == b"h%weird key+.txt"

    client.delete_object(Bucket=bucket, Key="e.txt")
    with pytest.raises(ClientError) as excinfo:
        client.get_object(Bucket=bucket, Key="e.txt")
    assert error_of(excinfo)[0] == "NoSuchKey"
    with pytest.raises(ClientError) as excinfo:
        client.delete_bucket(Bucket=bucket)
    assert error_of(excinfo)[0] == "BucketNotEmpty"
    assert bucket in [b["Name"] for b in client.list_buckets()["Buckets"]]


def test_signature_errors_are_s3s(server):
    bad_key = server.client("s3", secret_key="wrong-secret", shared=False)
    with pytest.raises(ClientError) as excinfo:
        bad_key.list_buckets()
    assert error_of(excinfo)[0] == "SignatureDoesNotMatch"
    unknown = server.client("s3", access_key="nobody", shared=False)
    with pytest.raises(ClientError) as excinfo:
        unknown.list_buckets()
    assert error_of(excinfo)[0] == "InvalidAccessKeyId"
    # Anonymous requests get S3's error document, not another route's.
    anonymous = server.send("GET", "/some-bucket/some-key")
    assert anonymous.status == 403 and b"<Code>AccessDenied</Code>" in anonymous.body


# ---- requests signed by hand, as SDKs other than boto3 send them ------------------


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _signing_key(date: str) -> bytes:
    key = _hmac(("AWS4" + SECRET_ACCESS_KEY).encode(), date)
    for part in (REGION, "s3", "aws4_request"):
        key = _hmac(key, part)
    return key


def signed_s3_request(method: str, path: str, headers: dict[str, str], payload_hash: str):
    """Headers for a request signed with SigV4 for S3 (path as sent)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    headers = {name.lower(): value for name, value in headers.items()}
    headers["x-amz-date"] = amz_date
    headers["x-amz-content-sha256"] = payload_hash
    names = sorted(headers)
    canonical = "\n".join([
        method, path, "",
        "".join(f"{name}:{headers[name].strip()}\n" for name in names),
        ";".join(names), payload_hash,
    ])
    scope = f"{date}/{REGION}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = _signing_key(date)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/{scope}, "
                                f"SignedHeaders={';'.join(names)}, Signature={signature}")
    return headers, key, amz_date, scope, signature


def chunked_body(data: bytes, chunk_size: int, key: bytes, amz_date: str, scope: str,
                 seed: str, tamper: bool = False) -> bytes:
    """`aws-chunked` with each chunk's signature chained from the seed."""
    empty = hashlib.sha256(b"").hexdigest()
    previous = seed
    out = b""
    chunks = [data[i:i + chunk_size] for i in range(0, len(data), chunk_size)] + [b""]
    for index, chunk in enumerate(chunks):
        to_sign = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, previous, empty,
                             hashlib.sha256(chunk).hexdigest()])
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        previous = signature
        if tamper and index == 1:
            chunk = bytes([chunk[0] ^ 1]) + chunk[1:]
        out += f"{len(chunk):x};chunk-signature={signature}\r\n".encode() + chunk + b"\r\n"
    return out


def put_streaming(server, bucket: str, key: str, data: bytes, tamper: bool = False):
    chunk_size = 64 * 1024
    encoded_length = len(chunked_body(data, chunk_size, b"k", "d", "s", "x"))
    headers = {
        "host": f"127.0.0.1:{server.port}",
        "content-encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(len(data)),
        "content-length": str(encoded_length),
    }
    path = f"/{bucket}/{urllib.parse.quote(key)}"
    headers, signing_key, amz_date, scope, seed = signed_s3_request(
        "PUT", path, headers, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
    body = chunked_body(data, chunk_size, signing_key, amz_date, scope, seed, tamper=tamper)
    assert len(body) == encoded_length
    return server.send("PUT", path, body=body, headers=headers)


def test_streaming_signed_chunks(server):
    client = s3(server)
    bucket = bucket_name("chunks")
    client.create_bucket(Bucket=bucket)
    data = os.urandom(200 * 1024 + 5)
    response = put_streaming(server, bucket, "streamed.bin", data)
    assert response.status == 200, response.body
    assert response.headers["etag"] == '"%s"' % hashlib.md5(data).hexdigest()
    assert client.get_object(Bucket=bucket, Key="streamed.bin")["Body"].read() == data

    # One flipped byte in the second chunk: its signature fails, nothing stored.
    refused = put_streaming(server, bucket, "tampered.bin", data, tamper=True)
    assert refused.status == 403 and b"<Code>SignatureDoesNotMatch</Code>" in refused.body
    with pytest.raises(ClientError):
        client.head_object(Bucket=bucket, Key="tampered.bin")


def test_content_sha256_is_checked_and_virtual_hosts_work(server):
    client = s3(server)
    bucket = bucket_name("vhost")
    client.create_bucket(Bucket=bucket)
    data = b"virtual host body"
    host = f"{bucket}.localhost:{server.port}"
    headers, *_ = signed_s3_request("PUT", "/vh.txt", {"host": host, "content-length": str(len(data))},
                                    hashlib.sha256(data).hexdigest())
    response = server.send("PUT", "/vh.txt", body=data, headers=headers)
    assert response.status == 200, response.body
    assert client.get_object(Bucket=bucket, Key="vh.txt")["Body"].read() == data
    # A body other than the one signed is refused and not stored.
    headers, *_ = signed_s3_request("PUT", "/other.txt", {"host": host, "content-length": str(len(data))},
                                    hashlib.sha256(b"something else").hexdigest())
    refused = server.send("PUT", "/other.txt", body=data, headers=headers)
    assert refused.status == 400 and b"<Code>XAmzContentSHA256Mismatch</Code>" in refused.body
    assert [item["Key"] for item in client.list_objects_v2(Bucket=bucket)["Contents"]] == ["vh.txt"]


def test_registry_routes_are_not_shadowed(server):
    # `/v2/` unsigned is the registry's, however S3 is configured.
    ping = server.send("GET", "/v2/")
    assert ping.status == 401 and ping.headers.get("docker-distribution-api-version") == "registry/2.0"
    health = server.send("GET", "/health")
    assert health.status == 200 and json.loads(health.body)["status"] == "ok"
    # A bucket named like the health route is reached when signed for S3.
    client = s3(server)
    client.create_bucket(Bucket="health")
    client.put_object(Bucket="health", Key="v2/x", Body=b"ok")
    assert client.get_object(Bucket="health", Key="v2/x")["Body"].read() == b"ok"
    assert server.send("GET", "/health").status == 200


def test_kill9_after_acknowledged_put_keeps_the_object(fresh_server):
    client = s3(fresh_server)
    bucket = bucket_name("durable")
    client.create_bucket(Bucket=bucket)
    data = os.urandom(3 * 1024 * 1024)
    client.put_object(Bucket=bucket, Key="kept.bin", Body=data)
    client.put_object(Bucket=bucket, Key="replaced.txt", Body=b"first")
    client.put_object(Bucket=bucket, Key="replaced.txt", Body=b"second")
    fresh_server.restart(hard=True)
    client = s3(fresh_server)
    assert client.get_object(Bucket=bucket, Key="kept.bin")["Body"].read() == data
    assert client.get_object(Bucket=bucket, Key="replaced.txt")["Body"].read() == b"second"
    blobs = list((fresh_server.data_dir / "s3" / "blobs").iterdir())
    assert len(blobs) == 2, "the replaced version's blob was removed"


def test_presigned_urls(server):
    import urllib.request

    # boto3 presigns S3 URLs with SigV2 unless told otherwise; only SigV4 is served.
    client = server.client("s3", signature_version="s3v4", shared=False)
    bucket = bucket_name("presigned")
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="shared.txt", Body=b"for whoever holds the link")
    url = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "shared.txt"},
                                        ExpiresIn=60)
    assert "X-Amz-Signature=" in url
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"for whoever holds the link"
    tampered = url.replace("shared.txt", "other.txt")
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(tampered, timeout=10)
    assert excinfo.value.code == 403
    assert b"<Code>SignatureDoesNotMatch</Code>" in excinfo.value.read()


def test_recursive_remove_and_delete_objects(server, tmp_path):
    bucket = bucket_name("bulk")
    aws(server, "s3", "mb", f"s3://{bucket}")
    client = s3(server)
    for index in range(5):
        client.put_object(Bucket=bucket, Key=f"logs/{index}.txt", Body=b"x")
    client.put_object(Bucket=bucket, Key="keep/me.txt", Body=b"y")
    removed = aws(server, "s3", "rm", f"s3://{bucket}/logs/", "--recursive").stdout
    assert removed.count("delete: ") == 5
    assert [item["Key"] for item in client.list_objects_v2(Bucket=bucket)["Contents"]] == ["keep/me.txt"]
    answer = client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "keep/me.txt"}, {"Key": "absent"}]})
    assert sorted(item["Key"] for item in answer["Deleted"]) == ["absent", "keep/me.txt"]
    client.put_object(Bucket=bucket, Key="again.txt", Body=b"z")
    aws(server, "s3", "rb", f"s3://{bucket}", "--force")
    assert bucket not in [b["Name"] for b in client.list_buckets()["Buckets"]]


def test_unsigned_payloads_and_trailing_checksums(server):
    import base64
    import zlib

    client = s3(server)
    bucket = bucket_name("unsigned")
    client.create_bucket(Bucket=bucket)
    host = f"127.0.0.1:{server.port}"
    data = b"body the signature does not cover"
    headers, *_ = signed_s3_request("PUT", f"/{bucket}/plain.txt",
                                    {"host": host, "content-length": str(len(data))}, "UNSIGNED-PAYLOAD")
    response = server.send("PUT", f"/{bucket}/plain.txt", body=data, headers=headers)
    assert response.status == 200, response.body
    assert client.get_object(Bucket=bucket, Key="plain.txt")["Body"].read() == data

    # aws-chunked without signatures, a CRC32 in the trailer (what SDKs send over HTTPS).
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()

    def trailer_put(key: str, checksum: str):
        body = (f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n"
                + f"x-amz-checksum-crc32:{checksum}\r\n\r\n".encode())
        headers, *_ = signed_s3_request("PUT", f"/{bucket}/{key}", {
            "host": host, "content-encoding": "aws-chunked", "content-length": str(len(body)),
            "x-amz-decoded-content-length": str(len(data)), "x-amz-trailer": "x-amz-checksum-crc32",
        }, "STREAMING-UNSIGNED-PAYLOAD-TRAILER")
        return server.send("PUT", f"/{bucket}/{key}", body=body, headers=headers)

    response = trailer_put("trailer.txt", crc)
    assert response.status == 200, response.body
    assert response.headers["x-amz-checksum-crc32"] == crc
    got = client.get_object(Bucket=bucket, Key="trailer.txt", ChecksumMode="ENABLED")
    assert got["Body"].read() == data and got["ChecksumCRC32"] == crc
    wrong = base64.b64encode((zlib.crc32(data) ^ 1).to_bytes(4, "big")).decode()
    refused = trailer_put("bad-trailer.txt", wrong)
    assert refused.status == 400 and b"<Code>BadDigest</Code>" in refused.body
    with pytest.raises(ClientError):
        client.head_object(Bucket=bucket, Key="bad-trailer.txt")


def test_a_corrupted_blob_is_never_served_whole(fresh_server):
    client = s3(fresh_server)
    bucket = bucket_name("corrupt")
    client.create_bucket(Bucket=bucket)
    data = os.urandom(700 * 1024)
    client.put_object(Bucket=bucket, Key="victim.bin", Body=data)
    [blob] = list((fresh_server.data_dir / "s3" / "blobs").iterdir())
    corrupted = bytearray(blob.read_bytes())
    corrupted[-1] ^= 0xFF
    blob.write_bytes(bytes(corrupted))
    with pytest.raises(Exception) as excinfo:
        client.get_object(Bucket=bucket, Key="victim.bin")["Body"].read()
    assert type(excinfo.value).__name__ in ("IncompleteReadError", "ResponseStreamingError", "ProtocolError"), repr(excinfo.value)
    # Ranged reads are not hashed (only whole reads can be): they still answer.
    assert client.get_object(Bucket=bucket, Key="victim.bin", Range="bytes=0-9")["Body"].read() == data[:10]
    assert "do not match the hash recorded" in fresh_server.stderr_tail()
