//! An S3 (or S3-compatible) store from a URL and `store_options`, as the
//! approvals store and an `s3://` policy file configure it: `AWS_*` environment
//! variables first, then the options (endpoint, region, credentials, ...).

use std::collections::BTreeMap;

/// Builds the store for `url` (`s3://bucket/...`); errors name the bad option.
pub fn store(
    url: &str,
    options: &BTreeMap<String, String>,
) -> Result<object_store::aws::AmazonS3, String> {
    let mut builder = object_store::aws::AmazonS3Builder::from_env().with_url(url);
    for (k, v) in options {
        let key = k
            .parse()
            .map_err(|e: object_store::Error| format!("option {k}: {e}"))?;
        builder = builder.with_config(key, v);
    }
    builder.build().map_err(|e| e.to_string())
}
