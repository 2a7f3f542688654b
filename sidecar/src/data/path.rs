//! The data API's URL grammar: which service and which blob a request path names.
//!
//! The reference server URL-decodes the path *with* its query string (JavaScript `decodeURI`)
//! and matches it against `/<alphanumeric service>[/<lowercase hex>*]`, anchored at both ends,
//! so any query on an object URL, or any other character, is an invalid URI.

use super::error::ApiError;

/// The service prefixes that serve blobs. `PassthroughFile` is an alias the reference keeps.
const SERVICES: [&str; 2] = ["DataFile", "PassthroughFile"];

/// What a request path names: a blob key (`None` for `/DataFile` or `/DataFile/`).
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    pub key: Option<String>,
}

/// Whether this is the disk usage request, which is recognised before the grammar.
pub fn is_disk_usage(path: &str, query: Option<&str>) -> bool {
    path == "/DataFile" && query == Some("diskUsage")
}

pub fn parse(path_and_query: &str) -> Result<Target, ApiError> {
    let decoded = decode_uri(path_and_query)
        .ok_or_else(|| ApiError::InvalidUri("malformed URI escape".into()))?;
    let rest = decoded
        .strip_prefix('/')
        .ok_or_else(|| ApiError::InvalidUri("path must start with /".into()))?;
    let (service, key) = match rest.split_once('/') {
        Some((service, key)) => (service, Some(key)),
        None => (rest, None),
    };
    let well_formed = !service.is_empty()
        && service.bytes().all(|b| b.is_ascii_alphanumeric())
        && key.is_none_or(|key| key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    if !well_formed {
        return Err(ApiError::InvalidUri(format!("unexpected path {decoded:?}")));
    }
    if !SERVICES.contains(&service) {
        return Err(ApiError::InvalidAction(format!(
            "unsupported service '{service}'"
        )));
    }
    Ok(Target {
        key: key.filter(|key| !key.is_empty()).map(str::to_owned),
    })
}

/// JavaScript's `decodeURI`: `%XX` escapes decoded as UTF-8, except those of characters that
/// are reserved in URIs, which stay escaped. `None` where the reference would throw.
fn decode_uri(text: &str) -> Option<String> {
    const RESERVED: &[u8] = b";/?:@&=+$,#";
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] != b'%' {
            out.push(bytes[index]);
            index += 1;
            continue;
        }
        // Exactly two hex digits: `from_str_radix` alone would also take a sign ("%+5").
        let hex = bytes.get(index + 1..index + 3)?;
        if !hex.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let byte = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
        if RESERVED.contains(&byte) {
            out.extend_from_slice(&bytes[index..index + 3]);
        } else {
            out.push(byte);
        }
        index += 3;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(path: &str) -> Option<String> {
        parse(path).unwrap().key
    }

    #[test]
    fn names_a_key_or_none() {
        assert_eq!(key("/DataFile"), None);
        assert_eq!(key("/DataFile/"), None);
        assert_eq!(key("/DataFile/0a1b"), Some("0a1b".into()));
        assert_eq!(key("/PassthroughFile/ff"), Some("ff".into()));
        assert_eq!(key("/%44ataFile/ab"), Some("ab".into()));
    }

    #[test]
    fn rejects_what_the_grammar_rejects() {
        for path in [
            "/DataFile/AB",
            "/DataFile/ab-cd",
            "/DataFile/ab?x=1",
            "/DataFile?diskUsage",
            "/",
            "//ab",
        ] {
            assert!(
                matches!(parse(path), Err(ApiError::InvalidUri(_))),
                "{path}"
            );
        }
        assert!(matches!(
            parse("/DataFile/ab/cd"),
            Err(ApiError::InvalidUri(_))
        ));
        assert!(matches!(
            parse("/DataFile%2Fab"),
            Err(ApiError::InvalidUri(_))
        ));
        assert!(matches!(
            parse("/DataFile/%zz"),
            Err(ApiError::InvalidUri(_))
        ));
        assert!(matches!(
            parse("/Other/ab"),
            Err(ApiError::InvalidAction(_))
        ));
    }

    #[test]
    fn recognises_disk_usage_before_the_grammar() {
        assert!(is_disk_usage("/DataFile", Some("diskUsage")));
        assert!(!is_disk_usage("/DataFile/", Some("diskUsage")));
        assert!(!is_disk_usage("/DataFile", Some("diskusage")));
    }
}
