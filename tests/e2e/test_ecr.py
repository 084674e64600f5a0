"""The image registry end to end: the AWS CLI and boto3 for the ECR API,
the Docker CLI and skopeo for the distribution protocol, against a real
`flotilla server`, checked the way a user would (describe-images, docker
pull and run), plus raw protocol requests for what no client does on
purpose: uploads cut short, wrong digests, malformed manifests."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess

import pytest
from botocore.exceptions import ClientError

from ecr_support import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    DockerClient,
    RawRegistry,
    blob_files,
    build_image,
    ecr_cli,
    login_password,
    registry_host,
    sha256,
)
from support import docker, error_of, unique, wait_until


@pytest.fixture(scope="module")
def ecr(server):
    return server.client("ecr")


def create_repository(server, prefix: str, *extra: str) -> str:
    name = unique(prefix)
    code, out = ecr_cli(server, "create-repository", "--repository-name", name, *extra)
    assert code == 0, out
    assert out["repository"]["repositoryUri"] == f"{registry_host(server)}/{name}"
    return name


@pytest.mark.docker
def test_docker_push_describe_pull_and_run(docker_ready, server, tmp_path):
    name = create_repository(server, "team/web")
    image = f"{registry_host(server)}/{name}:v1"
    marker = unique("pushed-and-pulled")
    build_image(image, marker)
    client = DockerClient(tmp_path / "docker")
    client.login(server)
    try:
        client.run("push", image)
        code, described = ecr_cli(server, "describe-images", "--repository-name", name)
        assert code == 0, described
        [detail] = described["imageDetails"]
        assert detail["imageTags"] == ["v1"]
        assert detail["imageManifestMediaType"] == DOCKER_MANIFEST
        assert detail["imageSizeInBytes"] > 1_000_000  # busybox is in there
        assert detail["registryId"] == server.account_id
        pushed_digest = detail["imageDigest"]

        docker("rmi", "-f", image)
        client.run("pull", image)
        repo_digests = json.loads(docker("image", "inspect", image).stdout)[0]["RepoDigests"]
        assert f"{registry_host(server)}/{name}@{pushed_digest}" in repo_digests
        assert client.run("run", "--rm", image).stdout.decode().strip() == marker

        def pull_recorded():
            _, again = ecr_cli(server, "describe-images", "--repository-name", name)
            return again["imageDetails"][0].get("lastRecordedPullTime")
        wait_until(pull_recorded, 10, "the pull to be recorded")
        code, listed = ecr_cli(server, "list-images", "--repository-name", name)
        assert listed["imageIds"] == [{"imageDigest": pushed_digest, "imageTag": "v1"}]
    finally:
        docker("rmi", "-f", image, check=False)


@pytest.mark.docker
def test_push_and_pull_without_login_are_refused(docker_ready, server, tmp_path):
    name = create_repository(server, "private")
    image = f"{registry_host(server)}/{name}:v1"
    build_image(image, unique("refused"))
    anonymous = DockerClient(tmp_path / "anonymous")
    try:
        pushed = anonymous.run("push", image, check=False)
        assert pushed.returncode != 0
        assert b"no basic auth credentials" in pushed.stderr or b"unauthorized" in pushed.stderr.lower()
        pulled = anonymous.run("pull", image, check=False)
        assert pulled.returncode != 0
    finally:
        docker("rmi", "-f", image, check=False)
    # The challenge Docker expects, and no access with a forged or no token.
    for token in ("", "v1.forged.token"):
        status, headers, body = RawRegistry(server, token=token).request("GET", "/v2/")
        assert status == 401, body
        assert headers["www-authenticate"].startswith("Basic realm=")
        assert headers["docker-distribution-api-version"] == "registry/2.0"
    status, _, _ = RawRegistry(server).request("GET", "/v2/")
    assert status == 200
    code, listed = ecr_cli(server, "list-images", "--repository-name", name)
    assert listed["imageIds"] == []


@pytest.mark.docker
def test_skopeo_copies_an_oci_image_in_and_out(docker_ready, server, tmp_path):
    if shutil.which("skopeo") is None:
        pytest.fail("skopeo is not installed: cargo xtask test installs it (apt-get install skopeo)")
    name = create_repository(server, "oci")
    local = f"flotilla-test/skopeo-{unique('src')}:latest"
    build_image(local, unique("oci"))
    creds = f"AWS:{login_password(server)}"
    try:
        layout_in = tmp_path / "in"
        subprocess.run(["skopeo", "copy", f"docker-daemon:{local}", f"oci:{layout_in}:v1"], check=True,
                       capture_output=True, timeout=120)
        destination = f"docker://{registry_host(server)}/{name}:v1"
        subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", "--dest-creds", creds,
                        f"oci:{layout_in}:v1", destination], check=True, capture_output=True, timeout=120)
        code, described = ecr_cli(server, "describe-images", "--repository-name", name)
        [detail] = described["imageDetails"]
        assert detail["imageManifestMediaType"] == OCI_MANIFEST
        layout_out = tmp_path / "out"
        subprocess.run(["skopeo", "copy", "--src-tls-verify=false", "--src-creds", creds,
                        destination, f"oci:{layout_out}:v1"], check=True, capture_output=True, timeout=120)
        index = json.loads((layout_out / "index.json").read_text())
        assert index["manifests"][0]["digest"] == detail["imageDigest"]
        manifest_path = layout_out / "blobs" / "sha256" / detail["imageDigest"].split(":")[1]
        assert sha256(manifest_path.read_bytes()) == detail["imageDigest"]
    finally:
        docker("rmi", "-f", local, check=False)


@pytest.mark.docker
def test_immutable_tags_are_not_overwritten(docker_ready, server, ecr, tmp_path):
    name = create_repository(server, "fixed", "--image-tag-mutability", "IMMUTABLE")
    image = f"{registry_host(server)}/{name}:release"
    client = DockerClient(tmp_path / "docker")
    client.login(server)
    try:
        build_image(image, unique("first"))
        client.run("push", image)
        first = ecr.describe_images(repositoryName=name)["imageDetails"][0]["imageDigest"]
        build_image(image, unique("second"))
        pushed = client.run("push", image, check=False)
        assert pushed.returncode != 0
        assert b"tag invalid" in pushed.stderr.lower() or b"immutable" in pushed.stderr.lower(), pushed.stderr
        details = ecr.describe_images(repositoryName=name)["imageDetails"]
        assert [d["imageDigest"] for d in details if "release" in d.get("imageTags", [])] == [first]
        # Through the API too.
        manifest = ecr.batch_get_image(repositoryName=name, imageIds=[{"imageTag": "release"}])["images"][0]
        other = RawRegistry(server).push_image(name, "other", unique("other"), DOCKER_MANIFEST)
        other_manifest = ecr.batch_get_image(repositoryName=name, imageIds=[{"imageDigest": other}])["images"][0]
        with pytest.raises(ClientError) as refused:
            ecr.put_image(repositoryName=name, imageTag="release", imageManifest=other_manifest["imageManifest"])
        assert error_of(refused)[0] == "ImageTagAlreadyExistsException"
        assert manifest["imageId"]["imageDigest"] == first
        # Mutable again: the push goes through.
        ecr.put_image_tag_mutability(repositoryName=name, imageTagMutability="MUTABLE")
        client.run("push", image)
        assert ecr.describe_repositories(repositoryNames=[name])["repositories"][0]["imageTagMutability"] == "MUTABLE"
    finally:
        docker("rmi", "-f", image, check=False)


def test_lifecycle_policy_expires_old_images(server_factory):
    server = server_factory(extra_args=("--registry-maintenance-interval-ms", "300"))
    ecr = server.client("ecr")
    name = unique("lifecycle")
    ecr.create_repository(repositoryName=name)
    raw = RawRegistry(server)
    digests = [raw.push_image(name, f"v{n}", unique(f"v{n}")) for n in range(1, 4)]
    raw.push_image(name, "keep-me", unique("keep"))
    policy = json.dumps({"rules": [{
        "rulePriority": 1, "description": "keep the newest v* image",
        "selection": {"tagStatus": "tagged", "tagPrefixList": ["v"], "countType": "imageCountMoreThan", "countNumber": 1},
        "action": {"type": "expire"},
    }]})
    ecr.start_lifecycle_policy_preview(repositoryName=name, lifecyclePolicyText=policy)
    preview = ecr.get_lifecycle_policy_preview(repositoryName=name)
    assert preview["status"] == "COMPLETE"
    assert {r["imageDigest"] for r in preview["previewResults"]} == set(digests[:2])
    assert all(r["action"]["type"] == "EXPIRE" and r["appliedRulePriority"] == 1 for r in preview["previewResults"])
    assert preview["summary"]["expiringImageTotalCount"] == 2
    assert len(ecr.list_images(repositoryName=name)["imageIds"]) == 4, "a preview expires nothing"

    ecr.put_lifecycle_policy(repositoryName=name, lifecyclePolicyText=policy)
    remaining = wait_until(
        lambda: (ids := ecr.list_images(repositoryName=name)["imageIds"]) and len(ids) == 2 and ids,
        15, "the lifecycle policy to expire two images")
    assert {i["imageTag"] for i in remaining} == {"v3", "keep-me"}
    assert "lastEvaluatedAt" in ecr.get_lifecycle_policy(repositoryName=name)
    ecr.delete_lifecycle_policy(repositoryName=name)
    with pytest.raises(ClientError) as missing:
        ecr.get_lifecycle_policy(repositoryName=name)
    assert error_of(missing)[0] == "LifecyclePolicyNotFoundException"
    with pytest.raises(ClientError) as invalid:
        # Long enough for botocore's own check, but tagged without a prefix list.
        ecr.put_lifecycle_policy(repositoryName=name, lifecyclePolicyText=json.dumps({"rules": [{
            "rulePriority": 1, "selection": {"tagStatus": "tagged", "countType": "imageCountMoreThan", "countNumber": 1},
            "action": {"type": "expire"}}]}))
    assert error_of(invalid)[0] == "InvalidParameterException"


def test_an_interrupted_upload_leaves_nothing_visible(server):
    raw = RawRegistry(server)
    name = unique("interrupted")
    server.client("ecr").create_repository(repositoryName=name)
    content = b"x" * 300_000
    digest = sha256(content)
    status, headers, _ = raw.request("POST", f"/v2/{name}/blobs/uploads/")
    assert status == 202
    location = headers["location"]
    assert headers["docker-upload-uuid"] in location and headers["range"] == "0-0"
    # Declare the whole blob, send a third of it, and hang up.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        head = (f"PUT {location}?digest={digest} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: {raw.auth_headers()['Authorization']}\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {len(content)}\r\n\r\n")
        sock.sendall(head.encode() + content[:100_000])
    status, _, body = raw.request("HEAD", f"/v2/{name}/blobs/{digest}")
    assert status == 404
    assert digest not in blob_files(server)
    # The upload is still there to resume (or to be collected later).
    status, headers, _ = wait_until(lambda: (r := raw.request("GET", location)) and r, 5, "upload status")
    assert status in (204, 404)


def test_a_blob_with_the_wrong_digest_is_refused(server):
    raw = RawRegistry(server)
    name = unique("corrupt")
    server.client("ecr").create_repository(repositoryName=name)
    claimed = sha256(b"what the client says it sends")
    status, _, body = raw.request("POST", f"/v2/{name}/blobs/uploads/?digest={claimed}", b"what it really sends")
    assert status == 400 and raw.error_code(body) == "DIGEST_INVALID", body
    assert raw.request("HEAD", f"/v2/{name}/blobs/{claimed}")[0] == 404
    assert claimed not in blob_files(server) and sha256(b"what it really sends") not in blob_files(server)
    # Chunked: right chunks, wrong digest at the end.
    status, headers, _ = raw.request("POST", f"/v2/{name}/blobs/uploads/")
    location = headers["location"]
    assert raw.request("PATCH", location, b"chunk one", {"Content-Range": "0-8"})[0] == 202
    status, _, body = raw.request("PUT", f"{location}?digest={claimed}")
    assert status == 400 and raw.error_code(body) == "DIGEST_INVALID"
    assert claimed not in blob_files(server)


def test_distribution_protocol_paths(server):
    """Chunked and resumable uploads, mounts, ranges, pagination, referrers, deletes."""
    raw = RawRegistry(server)
    ecr = server.client("ecr")
    name, other = unique("proto"), unique("proto-other")
    ecr.create_repository(repositoryName=name)
    ecr.create_repository(repositoryName=other)
    content = bytes(range(256)) * 4000
    digest = sha256(content)
    status, headers, _ = raw.request("POST", f"/v2/{name}/blobs/uploads/")
    location = headers["location"]
    status, headers, _ = raw.request("PATCH", location, content[:500_000], {"Content-Range": "0-499999"})
    assert status == 202 and headers["range"] == "0-499999"
    # A chunk that does not follow on is refused with where the upload is.
    status, headers, _ = raw.request("PATCH", location, content[600_000:], {"Content-Range": "600000-1023999"})
    assert status == 416 and headers["range"] == "0-499999"
    status, headers, _ = raw.request("GET", location)
    assert status == 204 and headers["range"] == "0-499999"
    assert raw.request("PATCH", location, content[500_000:], {"Content-Range": f"500000-{len(content) - 1}"})[0] == 202
    status, headers, _ = raw.request("PUT", f"{location}?digest={digest}")
    assert status == 201 and headers["docker-content-digest"] == digest
    status, headers, body = raw.request("GET", f"/v2/{name}/blobs/{digest}", headers={"Range": "bytes=10-19"})
    assert status == 206 and body == content[10:20] and headers["content-range"] == f"bytes 10-19/{len(content)}"
    status, headers, _ = raw.request("HEAD", f"/v2/{name}/blobs/{digest}")
    assert status == 200 and int(headers["content-length"]) == len(content)
    # Not readable from another repository until mounted there.
    assert raw.request("HEAD", f"/v2/{other}/blobs/{digest}")[0] == 404
    status, headers, _ = raw.request("POST", f"/v2/{other}/blobs/uploads/?mount={digest}&from={name}")
    assert status == 201 and headers["location"] == f"/v2/{other}/blobs/{digest}"
    assert raw.request("GET", f"/v2/{other}/blobs/{digest}")[2] == content
    # Tags, paginated with a Link header.
    image = raw.push_image(name, "a", unique("a"))
    for tag in ("b", "c"):
        manifest = raw.request("GET", f"/v2/{name}/manifests/a", headers={"Accept": OCI_MANIFEST})[2]
        assert raw.request("PUT", f"/v2/{name}/manifests/{tag}", manifest, {"Content-Type": OCI_MANIFEST})[0] == 201
    status, headers, body = raw.request("GET", f"/v2/{name}/tags/list?n=2")
    assert json.loads(body) == {"name": name, "tags": ["a", "b"]}
    assert headers["link"] == f'</v2/{name}/tags/list?n=2&last=b>; rel="next"'
    assert json.loads(raw.request("GET", f"/v2/{name}/tags/list?n=2&last=b")[2])["tags"] == ["c"]
    assert name in json.loads(raw.request("GET", "/v2/_catalog?n=1000")[2])["repositories"]
    # Referrers: an artifact whose subject is the image.
    empty = raw.push_blob(name, b"{}")
    artifact = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.sbom.v1",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": image, "size": 100},
    }).encode()
    status, headers, _ = raw.request("PUT", f"/v2/{name}/manifests/{sha256(artifact)}", artifact, {"Content-Type": OCI_MANIFEST})
    assert status == 201 and headers["oci-subject"] == image
    status, headers, body = raw.request("GET", f"/v2/{name}/referrers/{image}")
    assert status == 200 and headers["content-type"] == OCI_INDEX
    [referrer] = json.loads(body)["manifests"]
    assert referrer["digest"] == sha256(artifact) and referrer["artifactType"] == "application/vnd.example.sbom.v1"
    filtered = json.loads(raw.request("GET", f"/v2/{name}/referrers/{image}?artifactType=application/other")[2])
    assert filtered["manifests"] == []
    # An index of the image, then deletes: a tag alone, then the image.
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                        "manifests": [{"mediaType": OCI_MANIFEST, "digest": image, "size": 10}]}).encode()
    assert raw.request("PUT", f"/v2/{name}/manifests/multi", index, {"Content-Type": OCI_INDEX})[0] == 201
    assert raw.request("DELETE", f"/v2/{name}/manifests/c")[0] == 202
    assert raw.request("GET", f"/v2/{name}/manifests/c")[0] == 404
    assert raw.request("DELETE", f"/v2/{name}/manifests/{sha256(index)}")[0] == 202
    assert raw.request("DELETE", f"/v2/{name}/manifests/{image}")[0] == 202
    assert raw.request("GET", f"/v2/{name}/manifests/a")[0] == 404


def test_bad_input_is_refused_with_the_documented_codes_and_stores_nothing(server):
    raw = RawRegistry(server)
    ecr = server.client("ecr")
    name = unique("bad")
    ecr.create_repository(repositoryName=name)
    layer = raw.push_blob(name, b"a layer")
    before = blob_files(server)

    def put(manifest: bytes, content_type: str = OCI_MANIFEST, reference: str = "v1"):
        status, _, body = raw.request("PUT", f"/v2/{name}/manifests/{reference}", manifest, {"Content-Type": content_type})
        return status, raw.error_code(body) if body else None

    good = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": layer, "size": 7},
            "layers": []}
    assert put(b"{not json") == (400, "MANIFEST_INVALID")
    assert put(json.dumps({**good, "schemaVersion": 3}).encode()) == (400, "MANIFEST_INVALID")
    assert put(json.dumps(good).encode(), "application/vnd.example.unknown+json") == (415, "MANIFEST_INVALID")
    missing = {**good, "config": {**good["config"], "digest": sha256(b"never pushed")}}
    assert put(json.dumps(missing).encode()) == (400, "MANIFEST_BLOB_UNKNOWN")
    wrong_size = {**good, "config": {**good["config"], "size": 8}}
    assert put(json.dumps(wrong_size).encode()) == (400, "MANIFEST_INVALID")
    assert put(json.dumps(good).encode(), reference=sha256(b"other")) == (400, "DIGEST_INVALID")
    assert put(json.dumps(good).encode(), reference="bad:tag:") == (400, "DIGEST_INVALID")
    assert put(b" " * (4 * 1024 * 1024 + 1)) == (413, "MANIFEST_INVALID")
    assert raw.request("GET", f"/v2/{name}/tags/list")[2] == json.dumps({"name": name, "tags": []}).encode().replace(b" ", b"")
    # Oversized uploads are refused on their declared length.
    status, headers, _ = raw.request("POST", f"/v2/{name}/blobs/uploads/")
    status, _, body = raw.request("PATCH", headers["location"], b"", {"Content-Length": str(11 * 1024 ** 3)})
    assert status in (413, 400)
    # Path traversal and invalid names: refused, never a path on disk.
    for path in (f"/v2/../{name}/tags/list", "/v2/%2e%2e/etc/tags/list", "/v2/Upper/tags/list",
                 "/v2/a..b/manifests/v1", f"/v2/{name}/../x/manifests/v1"):
        status, _, body = raw.request("GET", path)
        assert status in (400, 404), (path, status)
        assert raw.error_code(body) in ("NAME_INVALID", "NAME_UNKNOWN"), (path, body)
    status, _, body = raw.request("GET", f"/v2/{name}/blobs/uploads/..%2F..%2Ftoken.key")
    assert status == 404 and raw.error_code(body) in ("BLOB_UPLOAD_UNKNOWN", "NAME_INVALID")
    assert raw.request("GET", f"/v2/{name}/blobs/sha256:../../token.key")[0] in (400, 404)
    assert raw.request("GET", f"/v2/{name}/blobs/sha256:..%2F..%2Ftoken.key")[0] in (400, 404)
    # (botocore itself refuses names shorter than 2 or longer than 256 characters.)
    for bad_name in ("UPPER", "../etc", "a//b", "-a", "a..b", "a/./b"):
        with pytest.raises(ClientError) as refused:
            ecr.create_repository(repositoryName=bad_name)
        assert error_of(refused)[0] == "InvalidParameterException", bad_name
    assert blob_files(server) == before
    assert ecr.list_images(repositoryName=name)["imageIds"] == []


def test_ecr_api_layer_upload_images_and_repository_settings(server):
    """A client that speaks only the ECR API (as the AWS SDKs' ECR clients can)."""
    ecr = server.client("ecr")
    name = unique("api")
    created = ecr.create_repository(repositoryName=name, tags=[{"Key": "team", "Value": "a"}],
                                    encryptionConfiguration={"encryptionType": "KMS", "kmsKey": "alias/x"})
    arn = created["repository"]["repositoryArn"]
    assert arn == f"arn:aws:ecr:{server.region}:{server.account_id}:repository/{name}"
    assert created["repository"]["encryptionConfiguration"] == {"encryptionType": "KMS", "kmsKey": "alias/x"}
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    upload = ecr.initiate_layer_upload(repositoryName=name)
    upload_id = upload["uploadId"]
    assert upload["partSize"] > 0
    ecr.upload_layer_part(repositoryName=name, uploadId=upload_id, partFirstByte=0, partLastByte=9, layerPartBlob=config[:10])
    with pytest.raises(ClientError) as out_of_order:
        ecr.upload_layer_part(repositoryName=name, uploadId=upload_id, partFirstByte=20, partLastByte=21, layerPartBlob=b"xx")
    assert error_of(out_of_order)[0] == "InvalidLayerPartException"
    answer = ecr.upload_layer_part(repositoryName=name, uploadId=upload_id, partFirstByte=10,
                                   partLastByte=len(config) - 1, layerPartBlob=config[10:])
    assert answer["lastByteReceived"] == len(config) - 1
    ecr.complete_layer_upload(repositoryName=name, uploadId=upload_id, layerDigests=[sha256(config)])
    layers = ecr.batch_check_layer_availability(repositoryName=name, layerDigests=[sha256(config), sha256(b"no"), "bad"])
    assert [l["layerAvailability"] for l in layers["layers"]] == ["AVAILABLE", "UNAVAILABLE"]
    assert layers["failures"][0]["failureCode"] == "InvalidLayerDigest"
    manifest = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                           "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                                      "digest": sha256(config), "size": len(config)}, "layers": []})
    put = ecr.put_image(repositoryName=name, imageManifest=manifest, imageTag="v1")
    digest = put["image"]["imageId"]["imageDigest"]
    assert digest == sha256(manifest.encode())
    got = ecr.batch_get_image(repositoryName=name, imageIds=[{"imageTag": "v1"}, {"imageTag": "nope"}])
    assert got["images"][0]["imageManifest"] == manifest
    assert got["failures"][0]["failureCode"] == "ImageNotFound"
    url = ecr.get_download_url_for_layer(repositoryName=name, layerDigest=sha256(config))["downloadUrl"]
    import urllib.request
    assert urllib.request.urlopen(url, timeout=10).read() == config
    # Repository policy and resource tags.
    policy = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "ecr:*"}]})
    ecr.set_repository_policy(repositoryName=name, policyText=policy)
    assert json.loads(ecr.get_repository_policy(repositoryName=name)["policyText"]) == json.loads(policy)
    ecr.delete_repository_policy(repositoryName=name)
    with pytest.raises(ClientError) as no_policy:
        ecr.get_repository_policy(repositoryName=name)
    assert error_of(no_policy)[0] == "RepositoryPolicyNotFoundException"
    ecr.tag_resource(resourceArn=arn, tags=[{"Key": "env", "Value": "prod"}])
    ecr.untag_resource(resourceArn=arn, tagKeys=["team"])
    assert ecr.list_tags_for_resource(resourceArn=arn)["tags"] == [{"Key": "env", "Value": "prod"}]
    # Deletes: by tag (the last tag takes the image), then the repository.
    deleted = ecr.batch_delete_image(repositoryName=name, imageIds=[{"imageTag": "v1"}])
    assert deleted["imageIds"] == [{"imageDigest": digest, "imageTag": "v1"}]
    ecr.put_image(repositoryName=name, imageManifest=manifest, imageTag="v2")
    with pytest.raises(ClientError) as not_empty:
        ecr.delete_repository(repositoryName=name)
    assert error_of(not_empty)[0] == "RepositoryNotEmptyException"
    ecr.delete_repository(repositoryName=name, force=True)
    with pytest.raises(ClientError) as gone:
        ecr.describe_repositories(repositoryNames=[name])
    assert error_of(gone)[0] == "RepositoryNotFoundException"
    names = [r["repositoryName"] for r in ecr.get_paginator("describe_repositories").paginate().build_full_result()["repositories"]]
    assert name not in names


def test_images_tokens_and_uploads_survive_a_kill_9(fresh_server):
    server = fresh_server
    ecr = server.client("ecr")
    name = unique("durable")
    ecr.create_repository(repositoryName=name)
    raw = RawRegistry(server)
    digest = raw.push_image(name, "v1", unique("durable"))
    content = b"resumable " * 50_000
    status, headers, _ = raw.request("POST", f"/v2/{name}/blobs/uploads/")
    location = headers["location"]
    assert raw.request("PATCH", location, content[:200_000], {"Content-Range": "0-199999"})[0] == 202

    server.restart(hard=True)
    raw.port = server.port
    # The token issued before the crash still opens the registry (its key is on disk).
    status, _, manifest = raw.request("GET", f"/v2/{name}/manifests/v1")
    assert status == 200 and sha256(manifest) == digest
    assert server.client("ecr").describe_images(repositoryName=name)["imageDetails"][0]["imageDigest"] == digest
    # The upload resumes where it was cut off.
    status, headers, _ = raw.request("GET", location)
    assert status == 204 and headers["range"] == "0-199999"
    assert raw.request("PATCH", location, content[200_000:], {"Content-Range": f"200000-{len(content) - 1}"})[0] == 202
    status, _, body = raw.request("PUT", f"{location}?digest={sha256(content)}")
    assert status == 201, body
    assert raw.request("GET", f"/v2/{name}/blobs/{sha256(content)}")[2] == content


def test_pushing_to_a_repository_that_does_not_exist_is_refused(server):
    raw = RawRegistry(server)
    status, _, body = raw.request("POST", f"/v2/{unique('never-created')}/blobs/uploads/")
    assert status == 404 and raw.error_code(body) == "NAME_UNKNOWN"
    assert "does not exist" in json.loads(body)["errors"][0]["message"]
