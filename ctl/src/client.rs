//! The admin API's client: one HTTP/1.1 request per connection (`Connection: close`), over
//! the Unix socket (who you are is your uid and groups) or over HTTPS with a bearer token (who
//! you are is the token's `admin:ROLE` scopes), and the answer read as the API's types.
//!
//! HTTPS trusts exactly what it is told: a CA or certificate file (`--ca`), or the SHA-256
//! fingerprint of the appliance's certificate (`--fingerprint`, what airlockd logs and
//! `airlockd --init` prints), never the system's store. The token is read from a file that only
//! its owner may read; it is sent in the `Authorization` header and never printed.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use airlock_api::ErrorBody;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::de::DeserializeOwned;
use serde::Deserialize as _;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// The largest answer read (the audit log's longest page is well under this).
const MAX_ANSWER: usize = 64 << 20;

/// A failure: refused by the daemon (exit 1) or could not talk to it (exit 2).
#[derive(Debug)]
pub enum Fail {
    /// airlockd answered with an error.
    Refused(String),
    /// No answer, or not one this client understands.
    Connection(String),
}

/// Something a connection can be: a Unix socket or TLS over TCP.
trait Conn: Read + Write {
    /// Bounds each read.
    fn read_timeout(&self, t: Option<Duration>);
}

impl Conn for UnixStream {
    fn read_timeout(&self, t: Option<Duration>) {
        let _ = self.set_read_timeout(t);
    }
}

impl Conn for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn read_timeout(&self, t: Option<Duration>) {
        let _ = self.sock.set_read_timeout(t);
    }
}

/// Where airlockd is and how to prove who we are.
pub enum Client {
    /// The admin Unix socket.
    Unix(PathBuf),
    /// The TLS listener, with a token.
    Https {
        /// `HOST:PORT` as given.
        authority: String,
        /// The name the certificate must carry (unless pinned by fingerprint).
        server_name: ServerName<'static>,
        /// The verifier and the provider.
        tls: Arc<rustls::ClientConfig>,
        /// `Bearer …`.
        authorization: String,
    },
}

/// How to reach airlockd over HTTPS.
pub struct HttpsOptions<'a> {
    /// `https://HOST:PORT`.
    pub url: &'a str,
    /// A file holding the token (mode 0600 or stricter).
    pub token_file: Option<&'a Path>,
    /// A PEM file of the CA (or the certificate itself) to trust.
    pub ca: Option<&'a Path>,
    /// The SHA-256 of the appliance's certificate (hex, colons allowed).
    pub fingerprint: Option<&'a str>,
}

impl Client {
    /// A client of the HTTPS listener.
    pub fn https(o: &HttpsOptions<'_>) -> Result<Client, Fail> {
        let usage = |m: String| Fail::Connection(m);
        let authority = o
            .url
            .strip_prefix("https://")
            .ok_or_else(|| usage("--url must be https://HOST:PORT (the admin API is served only over TLS off the appliance)".into()))?
            .trim_end_matches('/')
            .to_string();
        if authority.is_empty() || authority.contains('/') {
            return Err(usage(
                "--url must be https://HOST:PORT, with no path".into(),
            ));
        }
        let host = match authority.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() && (!h.contains(':') || h.ends_with(']')) => h,
            _ => return Err(usage(
                "--url must name the port: https://HOST:PORT (airlockd's TLS listener, e.g. 8443)"
                    .into(),
            )),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let server_name = ServerName::try_from(host.to_string())
            .map_err(|_| usage(format!("{host:?} is not a host name or address")))?;
        let token_file = o.token_file.ok_or_else(|| {
            usage("--url needs --token-file FILE (a token with an admin:ROLE scope)".into())
        })?;
        let token = read_token(token_file)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| usage(format!("TLS set-up failed: {e}")))?;
        let config = match (o.ca, o.fingerprint) {
            (Some(_), Some(_)) => {
                return Err(usage("give --ca or --fingerprint, not both".into()));
            }
            (None, None) => {
                return Err(usage(
                    "--url needs --ca FILE (the appliance's CA or certificate) or --fingerprint SHA256 (its certificate's, as airlockd logs it)".into(),
                ))
            }
            (Some(ca), None) => {
                let mut roots = rustls::RootCertStore::empty();
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
                    .and_then(|i| i.collect::<Result<_, _>>())
                    .map_err(|e| usage(format!("cannot read {}: {e}", ca.display())))?;
                if certs.is_empty() {
                    return Err(usage(format!("{} holds no certificate", ca.display())));
                }
                for c in certs {
                    roots.add(c).map_err(|e| {
                        usage(format!("{} holds an unusable certificate: {e}", ca.display()))
                    })?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            (None, Some(fp)) => {
                let want = parse_fingerprint(fp)?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(Pinned { want, provider }))
                    .with_no_client_auth()
            }
        };
        Ok(Client::Https {
            authority,
            server_name,
            tls: Arc::new(config),
            authorization: format!("Bearer {token}"),
        })
    }

    fn connect(&self) -> Result<Box<dyn Conn>, Fail> {
        match self {
            Client::Unix(socket) => {
                let s = UnixStream::connect(socket).map_err(|e| {
                    Fail::Connection(format!(
                        "cannot connect to {} ({e}); is airlockd running, and may you use its socket?",
                        socket.display()
                    ))
                })?;
                // A daemon that stops reading does not hang the client. No read timeout: an
                // import from a medium answers only once the whole bundle has been verified.
                let _ = s.set_write_timeout(Some(Duration::from_secs(60)));
                Ok(Box::new(s))
            }
            Client::Https {
                authority,
                server_name,
                tls,
                ..
            } => {
                let cannot = |e: std::io::Error| {
                    Fail::Connection(format!("cannot connect to {authority}: {e}"))
                };
                // Every address the name has, in turn (`localhost` may be ::1 first).
                let mut last = None;
                let mut tcp = None;
                for addr in authority.to_socket_addrs().map_err(cannot)? {
                    match TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
                        Ok(t) => {
                            tcp = Some(t);
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                let tcp = tcp.ok_or_else(|| match last {
                    Some(e) => cannot(e),
                    None => Fail::Connection(format!("{authority} has no address")),
                })?;
                let _ = tcp.set_write_timeout(Some(Duration::from_secs(60)));
                let _ = tcp.set_nodelay(true);
                let conn = rustls::ClientConnection::new(tls.clone(), server_name.clone())
                    .map_err(|e| Fail::Connection(format!("TLS set-up failed: {e}")))?;
                let mut s = rustls::StreamOwned::new(conn, tcp);
                // Handshake now, so that a certificate that does not verify is named as such.
                while s.conn.is_handshaking() {
                    s.conn.complete_io(&mut s.sock).map_err(|e| {
                        Fail::Connection(format!("TLS with {authority} failed: {e}"))
                    })?;
                }
                Ok(Box::new(s))
            }
        }
    }

    fn head(&self, method: &str, path: &str, content_type: &str, len: u64) -> String {
        let auth = match self {
            Client::Unix(_) => String::new(),
            Client::Https { authorization, .. } => format!("Authorization: {authorization}\r\n"),
        };
        let host = match self {
            Client::Unix(_) => "airlockd",
            Client::Https { authority, .. } => authority,
        };
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n\r\n"
        )
    }

    /// A request with a JSON body (or none); the answer as JSON.
    pub fn call<B: serde::Serialize>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<Value, Fail> {
        let body = match body {
            Some(b) => serde_json::to_vec(b)
                .map_err(|e| Fail::Connection(format!("cannot encode the request: {e}")))?,
            None => Vec::new(),
        };
        self.call_raw(method, path, "application/json", &body)
    }

    /// A GET.
    pub fn get(&self, path: &str) -> Result<Value, Fail> {
        self.call::<()>("GET", path, None)
    }

    /// A request whose body is sent byte for byte (e.g. a signed file that must not be
    /// re-encoded).
    pub fn call_raw(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<Value, Fail> {
        let mut s = self.connect()?;
        let head = self.head(method, path, content_type, body.len() as u64);
        let written = s
            .write_all(head.as_bytes())
            .and_then(|()| s.write_all(body))
            .and_then(|()| s.flush());
        answer(s, written.map_err(|e| e.to_string()))
    }

    /// Streams `total` bytes from `source` as the body of `POST path`, calling `progress` with
    /// the bytes sent so far. `Err(Fail::Connection)` when the source ends early: closing the
    /// connection then cuts the body off, and airlockd drops the partial upload.
    pub fn stream(
        &self,
        path: &str,
        source: &mut dyn Read,
        total: u64,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Value, Fail> {
        let mut s = self.connect()?;
        // A daemon that never answers an upload does not hang the client forever.
        s.read_timeout(Some(Duration::from_secs(600)));
        let head = self.head("POST", path, "application/octet-stream", total);
        let mut sent = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        let written = (|| -> std::io::Result<()> {
            s.write_all(head.as_bytes())?;
            while sent < total {
                let want = buf.len().min((total - sent) as usize);
                let n = source.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the file shrank while it was sent",
                    ));
                }
                s.write_all(&buf[..n])?;
                sent += n as u64;
                progress(sent);
            }
            s.flush()
        })();
        progress(sent);
        if let Err(e) = &written {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                drop(s);
                return Err(Fail::Connection(format!(
                    "the upload stopped after {sent} of {total} bytes: {e}"
                )));
            }
        }
        // airlockd may refuse before reading everything (a bad signature, no permission): its
        // answer says why, so it is read even when writing failed.
        answer(
            s,
            written.map_err(|w| format!("the upload failed after {sent} of {total} bytes: {w}")),
        )
    }
}

/// The answer as the API's type `T`.
pub fn typed<T: DeserializeOwned>(v: &Value) -> Result<T, Fail> {
    T::deserialize(v).map_err(|e| {
        Fail::Connection(format!(
            "airlockd's answer is not what this airlockctl expects ({e}); are both the same version?"
        ))
    })
}

/// The daemon's answer; when writing the request failed (it may refuse before reading the
/// body, and close), the answer is still read: it says why.
fn answer(s: Box<dyn Conn>, written: Result<(), String>) -> Result<Value, Fail> {
    match read_response(s) {
        Ok((status, v)) if (200..300).contains(&status) => Ok(v),
        Ok((status, v)) => {
            let reason = ErrorBody::deserialize(&v)
                .map(|e| e.error)
                .unwrap_or_else(|_| "no reason given".into());
            Err(Fail::Refused(format!("refused ({status}): {reason}")))
        }
        Err(e) => Err(match written {
            Err(w) => Fail::Connection(w),
            Ok(()) => e,
        }),
    }
}

/// Reads one HTTP/1.1 response: the status and the body as JSON (`null` when it is not).
fn read_response(mut s: Box<dyn Conn>) -> Result<(u16, Value), Fail> {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    let broken = |e: std::io::Error| Fail::Connection(format!("airlockd's answer broke off: {e}"));
    // The head.
    let split = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        if raw.len() > 64 << 10 {
            return Err(Fail::Connection("malformed response from airlockd".into()));
        }
        match s.read(&mut chunk) {
            Ok(0) => return Err(Fail::Connection("incomplete response from airlockd".into())),
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(broken(e)),
        }
    };
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw.split_off(split + 4);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(Fail::Connection("malformed response from airlockd".into()))?;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let length: Option<usize> = header("content-length").and_then(|v| v.parse().ok());
    let chunked = header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    // The body: as long as announced, else until the end of the connection. A TLS peer that
    // closes without close_notify after the whole body still gave a whole answer.
    loop {
        if length.is_some_and(|l| body.len() >= l) {
            body.truncate(length.unwrap_or(0));
            break;
        }
        if body.len() > MAX_ANSWER {
            return Err(Fail::Connection("airlockd's answer is too large".into()));
        }
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && length.is_none() => break,
            Err(e) => return Err(broken(e)),
        }
    }
    if length.is_some_and(|l| body.len() < l) {
        return Err(Fail::Connection("airlockd's answer was cut off".into()));
    }
    if chunked {
        body = dechunk(&body).ok_or(Fail::Connection(
            "airlockd's answer has a malformed chunked body".into(),
        ))?;
    }
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// A chunked body's bytes.
fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line = b.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&b[..line]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        b = &b[line + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// Reads a token file: it must be a regular file only its owner may read or write (a token is
/// a password), holding one `al_…` token.
fn read_token(path: &Path) -> Result<String, Fail> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let fail = |m: String| Fail::Connection(m);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            fail(format!(
                "cannot open the token file {}: {e}",
                path.display()
            ))
        })?;
    let meta = f.metadata().map_err(|e| {
        fail(format!(
            "cannot read the token file {}: {e}",
            path.display()
        ))
    })?;
    if !meta.file_type().is_file() {
        return Err(fail(format!(
            "the token file {} is not a regular file",
            path.display()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(fail(format!(
            "the token file {} may be read by others (mode {:04o}): chmod 600 it",
            path.display(),
            meta.mode() & 0o7777
        )));
    }
    let mut text = String::new();
    Read::by_ref(&mut f)
        .take(4096)
        .read_to_string(&mut text)
        .map_err(|e| {
            fail(format!(
                "cannot read the token file {}: {e}",
                path.display()
            ))
        })?;
    let token = text.trim();
    // Never echo the file's content: it may be a secret in the wrong place.
    if token.is_empty()
        || token.len() > 512
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(fail(format!(
            "the token file {} does not hold one token (al_ID_SECRET, as `airlockctl token create` prints it)",
            path.display()
        )));
    }
    Ok(token.to_string())
}

fn parse_fingerprint(fp: &str) -> Result<[u8; 32], Fail> {
    let hexed: String = fp
        .trim()
        .trim_start_matches("sha256:")
        .chars()
        .filter(|c| *c != ':')
        .collect();
    let mut out = [0u8; 32];
    hex::decode_to_slice(&hexed, &mut out).map_err(|_| {
        Fail::Connection(
            "--fingerprint must be the certificate's SHA-256: 64 hex digits (colons allowed)"
                .into(),
        )
    })?;
    Ok(out)
}

/// Trusts exactly one certificate, by the SHA-256 of its DER (the appliance's self-signed
/// certificate); the handshake's signatures are still verified with it.
#[derive(Debug)]
struct Pinned {
    want: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if got == self.want {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the certificate's SHA-256 is {}, not the fingerprint given",
                hex::encode(got)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_and_fingerprints_parse() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n").as_deref(),
            Some(&b"abcde"[..])
        );
        assert_eq!(dechunk(b"5\r\nab"), None);
        let fp = "AB:".repeat(31) + "AB";
        assert_eq!(parse_fingerprint(&fp).expect("fp"), [0xAB; 32]);
        assert!(parse_fingerprint("abc").is_err());
    }

    #[test]
    fn a_token_file_others_may_read_is_refused_without_echoing_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("airlockctl-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("t");
        std::fs::write(&p, "al_abc_SECRETSECRET\n").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let Err(Fail::Connection(m)) = read_token(&p) else {
            panic!("a world-readable token file was accepted")
        };
        assert!(
            m.contains("chmod 600") && !m.contains("SECRETSECRET"),
            "{m}"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(read_token(&p).ok().as_deref(), Some("al_abc_SECRETSECRET"));
        std::fs::write(&p, "not a token at all: hunter2\n").expect("write");
        let Err(Fail::Connection(m)) = read_token(&p) else {
            panic!("garbage accepted")
        };
        assert!(!m.contains("hunter2"), "{m}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
