use std::sync::Arc;

use flotilla_store::MemoryStore;

use super::*;

fn open(dir: &Path) -> S3 {
    S3::open(Arc::new(MemoryStore::new()), dir, "us-east-1").expect("opens")
}

async fn put(s3: &S3, bucket: &str, key: &str, body: &[u8], id: &str) -> ObjectRecord {
    let mut writer = s3.create_blob(bucket, key, id, None).await.expect("blob");
    writer.write(body).await.expect("writes");
    let blob = writer.finish().await.expect("finishes");
    s3.complete_put(bucket, key, blob, ObjectHeaders::default(), 1_000)
        .await
        .expect("puts")
}

fn keys(page: &ListPage) -> Vec<String> {
    page.items
        .iter()
        .map(|item| match item {
            ListedItem::Object(record) => record.key.clone(),
            ListedItem::CommonPrefix(prefix) => format!("{prefix} (prefix)"),
        })
        .collect()
}

#[tokio::test]
async fn buckets_objects_and_their_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s3 = open(dir.path());
    s3.create_bucket("config", None, 1).await.expect("creates");
    let again = s3
        .create_bucket("config", None, 2)
        .await
        .expect_err("exists");
    assert_eq!(again.code(), "BucketAlreadyOwnedByYou");
    assert_eq!(
        s3.create_bucket("config", Some("eu-west-1"), 2)
            .await
            .expect_err("constraint")
            .code(),
        "IllegalLocationConstraintException"
    );
    let record = put(&s3, "config", "app.env", b"A=1\n", "blob-1").await;
    assert_eq!(
        record.md5_hex,
        hex::encode(<md5::Md5 as sha2::Digest>::digest(b"A=1\n"))
    );
    let replaced = put(&s3, "config", "app.env", b"A=2\n", "blob-2").await;
    assert_eq!(replaced.size_bytes, 4);
    // The replaced version's blob is gone.
    assert!(!dir.path().join("blobs/blob-1").exists());
    assert!(dir.path().join("blobs/blob-2").exists());
    let error = s3.delete_bucket("config").await.expect_err("not empty");
    assert_eq!(error.code(), "BucketNotEmpty");
    assert!(
        s3.head_bucket("config").is_ok(),
        "a refused delete keeps the bucket"
    );
    assert_eq!(
        s3.head_object("config", "missing")
            .expect_err("missing")
            .code(),
        "NoSuchKey"
    );
    assert_eq!(
        s3.head_object("nope", "k").expect_err("no bucket").code(),
        "NoSuchBucket"
    );
    s3.delete_object("config", "app.env")
        .await
        .expect("deletes");
    s3.delete_object("config", "app.env").await.expect("again");
    assert!(!dir.path().join("blobs/blob-2").exists());
    s3.delete_bucket("config").await.expect("empty now");
    assert!(s3.list_buckets().expect("lists").is_empty());
}

#[tokio::test]
async fn listing_pages_and_rolls_up_prefixes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s3 = open(dir.path());
    s3.create_bucket("data", None, 1).await.expect("creates");
    for (index, key) in ["a/1", "a/2", "b", "c/x/1", "c/y", "d"].iter().enumerate() {
        put(&s3, "data", key, b"x", &format!("b{index}")).await;
    }
    let all = ListObjectsV2 {
        bucket: "data".into(),
        max_keys: 1000,
        ..Default::default()
    };
    assert_eq!(keys(&s3.list_objects_v2(&all).expect("lists")).len(), 6);
    let rolled = ListObjectsV2 {
        delimiter: Some("/".into()),
        ..all.clone()
    };
    assert_eq!(
        keys(&s3.list_objects_v2(&rolled).expect("lists")),
        ["a/ (prefix)", "b", "c/ (prefix)", "d"]
    );
    // Two at a time, through continuation tokens.
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = s3
            .list_objects_v2(&ListObjectsV2 {
                max_keys: 2,
                continuation_token: token.clone(),
                ..rolled.clone()
            })
            .expect("lists");
        seen.extend(keys(&page));
        if !page.is_truncated {
            break;
        }
        token = page.next_continuation_token;
    }
    assert_eq!(seen, ["a/ (prefix)", "b", "c/ (prefix)", "d"]);
    let under_c = ListObjectsV2 {
        prefix: "c/".into(),
        ..rolled.clone()
    };
    assert_eq!(
        keys(&s3.list_objects_v2(&under_c).expect("lists")),
        ["c/x/ (prefix)", "c/y"]
    );
    let after = ListObjectsV2 {
        start_after: Some("b".into()),
        ..all.clone()
    };
    assert_eq!(
        keys(&s3.list_objects_v2(&after).expect("lists")),
        ["c/x/1", "c/y", "d"]
    );
    let bad = ListObjectsV2 {
        continuation_token: Some("!!".into()),
        ..all
    };
    assert_eq!(
        s3.list_objects_v2(&bad).expect_err("bad token").code(),
        "InvalidArgument"
    );
}

#[tokio::test]
async fn unfinished_and_unreferenced_blobs_are_removed_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let s3 = S3::open(Arc::clone(&store), dir.path(), "us-east-1").expect("opens");
    s3.create_bucket("keep", None, 1).await.expect("creates");
    put(&s3, "keep", "k", b"kept", "kept-blob").await;
    let mut unfinished = s3
        .create_blob("keep", "u", "unfinished", None)
        .await
        .expect("blob");
    unfinished.write(b"partial").await.expect("writes");
    std::mem::forget(unfinished);
    std::fs::write(dir.path().join("blobs/orphan"), b"orphan").expect("writes");
    drop(s3);
    let _reopened = S3::open(store, dir.path(), "us-east-1").expect("reopens");
    assert!(dir.path().join("blobs/kept-blob").exists());
    assert!(!dir.path().join("blobs/orphan").exists());
    assert!(!dir.path().join("tmp/unfinished").exists());
}
