//! The admin API's paths, built from names a caller typed: each segment percent-encoded, so that
//! a name with `/`, `?` or `%` in it reaches airlockd as one (refused) name, never as another
//! route or a query.

use std::fmt::Write as _;

/// The prefix of every admin route.
pub const PREFIX: &str = "/api/v1";

/// One path segment, percent-encoded (RFC 3986 unreserved characters pass).
pub fn segment(s: &str) -> String {
    if s == "." || s == ".." {
        // A dot segment would be a path step, not a name.
        return s.replace('.', "%2E");
    }
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `/api/v1/models/NAME`.
pub fn model(name: &str) -> String {
    format!("{PREFIX}/models/{}", segment(name))
}

/// `/api/v1/models/NAME/versions/VERSION`.
pub fn version(model: &str, version: &str) -> String {
    format!("{}/versions/{}", self::model(model), segment(version))
}

/// `/api/v1/tokens/ID`.
pub fn token(id: &str) -> String {
    format!("{PREFIX}/tokens/{}", segment(id))
}

/// `/api/v1/telemetry/query?…` for a selector and a window (each value percent-encoded).
pub fn telemetry_query(series: &str, from: &str, to: &str, points: u32) -> String {
    format!(
        "{PREFIX}/telemetry/query?series={}&from={}&to={}&points={points}",
        segment(series),
        segment(from),
        segment(to)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_cannot_reach_another_route() {
        assert_eq!(model("iris"), "/api/v1/models/iris");
        assert_eq!(
            version("a/../b", "1.0.0?x=1"),
            "/api/v1/models/a%2F..%2Fb/versions/1.0.0%3Fx%3D1"
        );
        assert_eq!(token("t 1%"), "/api/v1/tokens/t%201%25");
        assert_eq!(model(".."), "/api/v1/models/%2E%2E");
    }
}
