//! TLS end to end, with certificates made here (rcgen) and real processes: a gateway terminating TLS (SNI,
//! rotation with no restart and no dropped connection, a bad key refused on reload while the old certificate keeps
//! serving), and a second gateway reaching it as an `https://` upstream with verified certificates.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use modelgate_test_support::{Gateway, Upstream, eventually, get};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls_pki_types::CertificateDer;

/// A test CA that issues server certificates.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        Ca { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `names` with its key, as PEM.
    fn issue(&self, names: &[&str]) -> (String, String) {
        self.issue_with(names, |_| {})
    }

    /// [`Ca::issue`], with the parameters adjusted first (validity dates, say).
    fn issue_with(&self, names: &[&str], adjust: impl FnOnce(&mut CertificateParams)) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        adjust(&mut params);
        (params.signed_by(&key, &self.issuer).unwrap().pem(), key.serialize_pem())
    }
}

/// Writes by rename, as a certificate manager would: the watcher never sees half a file.
fn write(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, dir.join(name)).unwrap();
}

fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::pem::PemObject::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Every connection a full handshake, so the certificate seen is the one served now (a resumed session shows
    // the certificate of the session it resumes).
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// An HTTP/1.1 connection over TLS to `addr`, sending `sni`; with the certificate the server presented.
async fn connect(
    addr: &str,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<(hyper::client::conn::http1::SendRequest<Empty<Bytes>>, CertificateDer<'static>)> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok((send, presented))
}

async fn request(send: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>, path: &str) -> (u16, serde_json::Value) {
    let req = http::Request::get(path).header("host", "localhost").body(Empty::new()).unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
}

fn der_of(pem: &str) -> CertificateDer<'static> {
    rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap()
}

#[tokio::test]
async fn tls_termination_sni_rotation_and_verified_https_upstreams() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("modelgate test CA");
    let (cert1, key1) = ca.issue(&["localhost", "127.0.0.1"]);
    let (other_cert, other_key) = ca.issue(&["models.example.test"]);
    write(d, "ca.pem", &ca.pem());
    write(d, "server.pem", &cert1);
    write(d, "server.key", &key1);
    write(d, "other.pem", &other_cert);
    write(d, "other.key", &other_key);
    let up = Upstream::start("models").await;
    let config = format!(
        "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\nserver: {{ reload_debounce: 50ms }}\n\
         tls:\n  redirect_http: 127.0.0.1:0\n  certificates:\n    - {{ cert: {d}/server.pem, key: {d}/server.key }}\n    - {{ cert: {d}/other.pem, key: {d}/other.key, hosts: [models.example.test] }}\n\
         upstreams: {{ u: {{ targets: [\"http://{}\"] }} }}\nroutes: [ {{ name: r, match: {{ path_prefix: / }}, upstream: u }} ]\n",
        up.addr,
        d = d.display()
    );
    let front = Gateway::start(&config).await;
    let trusted = client_config(&ca.pem());

    // Served over TLS, the upstream told the request came over https.
    let (mut kept, presented) = connect(&front.addr, "localhost", trusted.clone()).await.unwrap();
    assert_eq!(presented, der_of(&cert1));
    let (status, echo) = request(&mut kept, "/v2/models/m/infer").await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https", "{echo}");
    // SNI picks the certificate for that host.
    let (_, presented) = connect(&front.addr, "models.example.test", trusted.clone()).await.unwrap();
    assert_eq!(presented, der_of(&other_cert));
    // A client that does not trust the CA refuses the server; plain HTTP gets no answer.
    let stranger = client_config(&Ca::new("another CA").pem());
    assert!(connect(&front.addr, "localhost", stranger).await.is_err(), "an unknown CA was accepted");
    let plain =
        modelgate_test_support::try_send(&modelgate_test_support::client(), http::Method::GET, &front.url("/x"), &[], Bytes::new()).await;
    assert!(plain.is_err(), "plain HTTP on the TLS listener got an answer");

    // curl, a client built on another TLS stack, verifying against the CA.
    let curl = std::process::Command::new("curl")
        .args(["-s", "--cacert", d.join("ca.pem").to_str().unwrap(), "-o", "/dev/null", "-w", "%{http_code} %{ssl_verify_result}"])
        .arg(format!("https://localhost:{}/x", front.addr.rsplit(':').next().unwrap()))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&curl.stdout), "200 0", "curl verified the certificate and got 200");

    // Rotation under load: new files while 4 clients open connection after connection; new connections get the
    // new certificate, none fails, and a connection opened before keeps working.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (addr, config, stop) = (front.addr.clone(), trusted.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u32, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match connect(&addr, "localhost", config.clone()).await {
                        Ok((mut send, _)) => match request(&mut send, "/load").await.0 {
                            200 => ok += 1,
                            other => failed.push(format!("status {other}")),
                        },
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let (cert2, key2) = ca.issue(&["localhost", "127.0.0.1"]);
    write(d, "server.key", &key2);
    write(d, "server.pem", &cert2);
    let rotated = eventually(Duration::from_secs(10), || async {
        connect(&front.addr, "localhost", trusted.clone()).await.is_ok_and(|(_, c)| c == der_of(&cert2))
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(rotated, "the rotated certificate was never served");
    for l in load {
        let (ok, failed) = l.await.unwrap();
        assert!(ok > 0 && failed.is_empty(), "{ok} ok, failed during rotation: {failed:?}");
    }
    assert_eq!(request(&mut kept, "/still-open").await.0, 200, "a connection opened before the rotation still works");

    // An expired certificate is refused by clients: rotating to one is the operator's mistake, not hidden.
    let (expired, expired_key) = ca.issue_with(&["localhost"], |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let (front_expired, _dir) = {
        let e = tempfile::tempdir().unwrap();
        write(e.path(), "c.pem", &expired);
        write(e.path(), "k.pem", &expired_key);
        let gw = Gateway::start(&format!(
            "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\ntls: {{ certificates: [ {{ cert: {0}/c.pem, key: {0}/k.pem }} ] }}\nupstreams: {{ u: {{ targets: [\"http://{1}\"] }} }}\nroutes: [ {{ name: r, match: {{ path_prefix: / }}, upstream: u }} ]\n",
            e.path().display(),
            up.addr
        ))
        .await;
        (gw, e)
    };
    let refused = connect(&front_expired.addr, "localhost", trusted.clone()).await.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(refused.to_lowercase().contains("expired"), "an expired certificate was accepted: {refused:?}");

    // A key that does not belong to the certificate: the reload is refused, the current certificate keeps serving.
    let (_, stray_key) = ca.issue(&["localhost"]);
    write(d, "server.key", &stray_key);
    let refused = front.reload().await;
    assert_eq!(refused.status, 422, "{}", String::from_utf8_lossy(&refused.body));
    let text = String::from_utf8_lossy(&refused.body).into_owned();
    assert!(text.contains("tls.certificates[0]") && text.contains("does not belong"), "{text}");
    let (_, presented) = connect(&front.addr, "localhost", trusted.clone()).await.unwrap();
    assert_eq!(presented, der_of(&cert2));
    write(d, "server.key", &key2);

    // Plain HTTP on the redirect listener: 308 to the same URL over HTTPS on the TLS port.
    let redirect = front.proc.ready["redirect_http"].as_str().expect("the redirect listener's address");
    let r = get(&format!("http://{redirect}/v2/models/m/infer?x=1")).await;
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some(format!("https://127.0.0.1:{}/v2/models/m/infer?x=1", front.addr.rsplit(':').next().unwrap()).as_str())
    );

    // A second gateway reaches the first as an `https://` upstream, verifying it against the CA.
    let port = front.addr.rsplit(':').next().unwrap();
    let back = |tls: &str| {
        format!(
            "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\nupstreams: {{ front: {{ targets: [\"https://localhost:{port}\"], tls: {tls} }} }}\nroutes: [ {{ name: r, match: {{ path_prefix: / }}, upstream: front }} ]\n"
        )
    };
    let edge = Gateway::start(&back(&format!("{{ ca: {}/ca.pem }}", d.display()))).await;
    let r = get(&edge.url("/v2/models/m/infer")).await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["headers"]["x-forwarded-proto"], "https", "the front gateway saw TLS");
    // The same with a name the certificate is not for, or without the CA: refused, 502 upstream_tls_failed.
    let wrong_name = Gateway::start(&back(&format!("{{ ca: {}/ca.pem, server_name: wrong.example.test }}", d.display()))).await;
    get(&wrong_name.url("/x")).await.assert_error(502, "upstream_tls_failed");
    let public_roots = Gateway::start(&back("{}")).await;
    get(&public_roots.url("/x")).await.assert_error(502, "upstream_tls_failed");
}

/// The issue's end state: a gateway route on `https://` fronting an `https://` model server (`serve --tls-cert`),
/// whose certificate the gateway verifies against the CA; REST and gRPC of the model server both speak TLS.
#[tokio::test]
async fn an_https_gateway_fronts_an_https_model_server() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("modelgate test CA");
    let (cert, key) = ca.issue(&["localhost", "127.0.0.1"]);
    write(d, "ca.pem", &ca.pem());
    write(d, "server.pem", &cert);
    write(d, "server.key", &key);
    let (cert_path, key_path) = (d.join("server.pem"), d.join("server.key"));
    let ms = modelgate_test_support::ModelServer::start_with(
        &modelgate_test_support::repo_root().join("examples/models"),
        &["--tls-cert", cert_path.to_str().unwrap(), "--tls-key", key_path.to_str().unwrap()],
        &[],
    )
    .await;
    let (port, grpc_port) = (ms.addr.rsplit(':').next().unwrap(), ms.grpc.rsplit(':').next().unwrap());
    let gw = Gateway::start(&format!(
        "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\ntls: {{ certificates: [ {{ cert: {d}/server.pem, key: {d}/server.key }} ] }}\n\
         upstreams: {{ models: {{ targets: [\"https://localhost:{port}\"], tls: {{ ca: {d}/ca.pem }} }} }}\n\
         routes: [ {{ name: r, match: {{ path_prefix: /v2 }}, upstream: models }} ]\n",
        d = d.display()
    ))
    .await;
    let (mut send, _) = connect(&gw.addr, "localhost", client_config(&ca.pem())).await.unwrap();
    let (status, meta) = request(&mut send, "/v2/models/digits").await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["name"], "digits");
    // The model server's own listeners refuse plain connections and serve TLS (gRPC by ALPN h2).
    assert!(
        modelgate_test_support::try_send(
            &modelgate_test_support::client(),
            http::Method::GET,
            &ms.url("/v2/health/ready"),
            &[],
            Bytes::new()
        )
        .await
        .is_err()
    );
    let mut h2 = (*client_config(&ca.pem())).clone();
    h2.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(format!("127.0.0.1:{grpc_port}")).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(h2)).connect("localhost".try_into().unwrap(), tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "gRPC over TLS negotiates h2");

    // Rotation without a restart: new files, and new connections to the model server get the new certificate.
    let (new_cert, new_key) = ca.issue(&["localhost", "127.0.0.1"]);
    write(d, "server.key", &new_key);
    write(d, "server.pem", &new_cert);
    let rest = ms.addr.clone();
    let rotated = eventually(Duration::from_secs(10), || {
        let (rest, config, want) = (rest.clone(), client_config(&ca.pem()), der_of(&new_cert));
        async move { connect(&rest, "localhost", config).await.is_ok_and(|(_, presented)| presented == want) }
    })
    .await;
    assert!(rotated, "the model server serves the rotated certificate");
}

/// `up --tls-cert/--tls-key`: the whole demo over HTTPS.
#[tokio::test]
async fn up_serves_https_with_a_given_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("modelgate test CA");
    let (cert, key) = ca.issue(&["localhost", "127.0.0.1"]);
    write(dir.path(), "server.pem", &cert);
    write(dir.path(), "server.key", &key);
    let (cert_path, key_path) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    let up = modelgate_test_support::Proc::spawn(
        &[
            "up",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let gw = up.ready["gateway"].as_str().unwrap();
    let dev_key = up.ready["dev_key"].as_str().unwrap();
    let (mut send, presented) = connect(gw, "localhost", client_config(&ca.pem())).await.unwrap();
    assert_eq!(presented, der_of(&cert));
    let req = http::Request::get("/v2/models/digits").header("host", "localhost").header("x-api-key", dev_key).body(Empty::new()).unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
}

/// `curl` over TLS to `addr` with `--cacert ca.pem` and, when given, a client certificate and key (files in `d`):
/// `(curl exit code, HTTP status, body)`.
fn curl_mtls(d: &Path, addr: &str, path: &str, client: Option<(&str, &str)>) -> (i32, String, String) {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-s", "--cacert", d.join("ca.pem").to_str().unwrap(), "-w", "\n%{http_code}"]);
    if let Some((cert, key)) = client {
        cmd.args(["--cert", d.join(cert).to_str().unwrap(), "--key", d.join(key).to_str().unwrap()]);
    }
    let out = cmd.arg(format!("https://localhost:{}{path}", addr.rsplit(':').next().unwrap())).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (out.status.code().unwrap_or(-1), status.to_string(), body.to_string())
}

#[tokio::test]
async fn client_certificates_authenticate_callers_for_policy() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("modelgate test CA");
    let clients = Ca::new("clients CA");
    let stranger = Ca::new("someone else's CA");
    let (server, server_key) = ca.issue(&["localhost", "127.0.0.1"]);
    write(d, "ca.pem", &ca.pem());
    write(d, "server.pem", &server);
    write(d, "server.key", &server_key);
    write(d, "clients-ca.pem", &clients.pem());
    // Workload certificates as SPIFFE issues them: the identity is a SAN URI.
    let spiffe = |ca: &Ca, id: &str, serial: u64| {
        ca.issue_with(&[], |p| {
            p.serial_number = Some(rcgen::SerialNumber::from(serial));
            p.subject_alt_names.push(rcgen::SanType::URI(id.try_into().unwrap()));
            p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        })
    };
    for (name, (cert, key)) in [
        ("team-a", spiffe(&clients, "spiffe://example.org/ns/team-a/sa/scorer", 1)),
        ("team-b", spiffe(&clients, "spiffe://example.org/ns/team-b/sa/batch", 2)),
        ("forged", spiffe(&stranger, "spiffe://example.org/ns/team-a/sa/scorer", 1)),
    ] {
        write(d, &format!("{name}.pem"), &cert);
        write(d, &format!("{name}.key"), &key);
    }
    let up = Upstream::start("models").await;
    let config_with = |required: bool, identity: &str, crl: &str| {
        format!(
            "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\n{identity}\
             tls:\n  certificates: [ {{ cert: {d}/server.pem, key: {d}/server.key }} ]\n  client_auth: {{ ca: {d}/clients-ca.pem, required: {required}{crl} }}\n\
             upstreams: {{ u: {{ targets: [\"http://{}\"] }} }}\n\
             routes:\n  - name: r\n    match: {{ path_prefix: / }}\n    upstream: u\n    plugins:\n      - auth: {{ methods: [mtls] }}\n      - policy: {{ allow: [ {{ consumers: [\"spiffe://example.org/ns/team-a/*\"], methods: [mtls] }}, {{ groups: [batch], methods: [mtls] }} ] }}\n",
            up.addr,
            d = d.display()
        )
    };
    let config = |required: bool| config_with(required, "", "");
    let gw = Gateway::start(&config(false)).await;

    // A certificate from the clients' CA names the caller: the upstream learns who, and how.
    let (code, status, body) = curl_mtls(d, &gw.addr, "/v2/models/digits/infer", Some(("team-a.pem", "team-a.key")));
    assert_eq!((code, status.as_str()), (0, "200"), "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["headers"]["x-modelgate-consumer"], "spiffe://example.org/ns/team-a/sa/scorer", "{echo}");
    assert_eq!(echo["headers"]["x-modelgate-auth-method"], "mtls", "{echo}");
    // Another workload of the same CA: authenticated, not allowed by the rule.
    let (_, status, body) = curl_mtls(d, &gw.addr, "/v2/models/digits/infer", Some(("team-b.pem", "team-b.key")));
    assert_eq!(status, "403", "{body}");
    // Declared in config (Kong's consumer with its ACL groups): the certificate's consumer gains the group the
    // policy allows.
    let declared = "identity: { consumers: { \"spiffe://example.org/ns/team-b/sa/batch\": { groups: [batch] } } }\n";
    gw.write_config(&config_with(false, declared, ""));
    assert_eq!(gw.reload().await.status, 200);
    let (_, status, body) = curl_mtls(d, &gw.addr, "/v2/models/digits/infer", Some(("team-b.pem", "team-b.key")));
    assert_eq!(status, "200", "{body}");
    // A CRL from the clients' CA revoking team-b's certificate: its handshake fails, team-a's still works.
    let revoked = rcgen::CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2025, 1, 1),
        next_update: rcgen::date_time_ymd(2035, 1, 1),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![rcgen::RevokedCertParams {
            serial_number: rcgen::SerialNumber::from(2u64),
            revocation_time: rcgen::date_time_ymd(2025, 6, 1),
            reason_code: Some(rcgen::RevocationReason::KeyCompromise),
            invalidity_date: None,
        }],
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    write(d, "clients.crl", &revoked.signed_by(&clients.issuer).unwrap().pem().unwrap());
    gw.write_config(&config_with(false, declared, &format!(", crl: [{}/clients.crl]", d.display())));
    assert_eq!(gw.reload().await.status, 200);
    let (code, status, _) = curl_mtls(d, &gw.addr, "/v2/models/digits/infer", Some(("team-b.pem", "team-b.key")));
    assert_eq!((code != 0, status.as_str()), (true, "000"), "the revoked certificate fails the handshake");
    let (code, status, body) = curl_mtls(d, &gw.addr, "/v2/models/digits/infer", Some(("team-a.pem", "team-a.key")));
    assert_eq!((code, status.as_str()), (0, "200"), "{body}");
    // A file that is not a CRL is a config error naming it; the running config stays.
    write(d, "bad.crl", "not a crl");
    gw.write_config(&config_with(false, declared, &format!(", crl: [{}/bad.crl]", d.display())));
    let r = gw.reload().await;
    r.assert_error(422, "config_invalid");
    assert_eq!(r.json()["error"]["details"][0]["path"], "tls.client_auth.crl[0]");
    gw.write_config(&config(false));
    assert_eq!(gw.reload().await.status, 200);
    // No certificate (optional at the handshake): the route's `mtls` method finds no credential.
    let (_, status, body) = curl_mtls(d, &gw.addr, "/v2/models/digits/infer", None);
    assert_eq!(status, "401", "{body}");
    assert!(body.contains("\"unauthenticated\""), "{body}");
    // A certificate with the same name from a CA the gateway does not trust fails the handshake.
    let (code, status, _) = curl_mtls(d, &gw.addr, "/v2/models/digits/infer", Some(("forged.pem", "forged.key")));
    assert_ne!(code, 0, "the handshake failed (curl exit code)");
    assert_eq!(status, "000");

    // `required: true` by reload: a client without a certificate no longer completes the handshake.
    gw.write_config(&config(true));
    assert_eq!(gw.reload().await.status, 200);
    let (code, status, _) = curl_mtls(d, &gw.addr, "/v2/models/digits/infer", None);
    assert!(code != 0 || status != "401", "refused at the handshake, not by the route: {code} {status}");
    let (code, status, _) = curl_mtls(d, &gw.addr, "/v2/models/digits/infer", Some(("team-a.pem", "team-a.key")));
    assert_eq!((code, status.as_str()), (0, "200"));

    // A gateway in front presents its own client certificate to this one (mTLS to an upstream); without it the
    // handshake is refused and the front answers 502 upstream_tls_failed.
    let port = gw.addr.rsplit(':').next().unwrap();
    let front = |client: &str| {
        format!(
            "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\n\
             upstreams: {{ back: {{ targets: [\"https://localhost:{port}\"], tls: {{ ca: {d}/ca.pem{client} }} }} }}\n\
             routes: [ {{ name: r, match: {{ path_prefix: / }}, upstream: back }} ]\n",
            d = d.display()
        )
    };
    let with_cert = Gateway::start(&front(&format!(", client_cert: {d}/team-a.pem, client_key: {d}/team-a.key", d = d.display()))).await;
    let r = get(&with_cert.url("/v2/models/digits/infer")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["headers"]["x-modelgate-consumer"], "spiffe://example.org/ns/team-a/sa/scorer");
    let without = Gateway::start(&front("")).await;
    get(&without.url("/v2/models/digits/infer")).await.assert_error(502, "upstream_tls_failed");
}
