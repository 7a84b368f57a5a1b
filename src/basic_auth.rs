//! HTTP Basic credentials, checked in constant time: the admin endpoint
//! (`[admin]` username and password) and the relay webhook use the same check.
//! A leaf of its own so neither has to import the other.

use axum::http::{HeaderMap, header};

/// Compares digests, not the strings, so neither the content nor the length
/// of the expected credentials shows in the time taken.
pub fn credentials_match(headers: &HeaderMap, user: &str, pass: &str) -> bool {
    use aws_lc_rs::digest::{SHA256, digest};
    use base64::Engine as _;
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, token)) = value.trim().split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(token.trim()) else {
        return false;
    };
    let expected = format!("{user}:{pass}");
    let given = digest(&SHA256, &given);
    let expected = digest(&SHA256, expected.as_bytes());
    aws_lc_rs::constant_time::verify_slices_are_equal(given.as_ref(), expected.as_ref()).is_ok()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn with_auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(value).expect("header value"),
        );
        h
    }

    #[test]
    fn basic_auth_compares_user_and_password() {
        // "prom:s3cret" and "prom:wrong"
        assert!(credentials_match(
            &with_auth("Basic cHJvbTpzM2NyZXQ="),
            "prom",
            "s3cret"
        ));
        assert!(credentials_match(
            &with_auth("basic cHJvbTpzM2NyZXQ="),
            "prom",
            "s3cret"
        ));
        assert!(!credentials_match(
            &with_auth("Basic cHJvbTp3cm9uZw=="),
            "prom",
            "s3cret"
        ));
        assert!(!credentials_match(
            &with_auth("Bearer cHJvbTpzM2NyZXQ="),
            "prom",
            "s3cret"
        ));
        assert!(!credentials_match(
            &with_auth("Basic %%%"),
            "prom",
            "s3cret"
        ));
        assert!(!credentials_match(&HeaderMap::new(), "prom", "s3cret"));
    }
}
