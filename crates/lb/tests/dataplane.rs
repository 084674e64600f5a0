//! The data plane with real sockets: backends are hyper servers, clients are
//! curl, hyper and wrk.

mod support;

use std::collections::HashMap;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_h2c_and_forwarded_headers() {
    let backend = Backend::start("a").await;
    let port = free_port();
    let plane = plane();
    plane
        .apply(snapshot(
            alb(port, &[&backend], json!({"HealthCheckEnabled": false})),
            1,
        ))
        .await
        .expect("applied");
    // HTTP/1.1 keep-alive: two requests on one connection (curl reuses it).
    let url = format!("http://127.0.0.1:{port}/");
    let out = curl(vec![
        url.clone(),
        url.clone(),
        "-w".into(),
        " %{num_connects} %{http_version}\n".into(),
    ])
    .await;
    assert_eq!(out, "a 1 1.1\na 0 1.1\n", "two answers, one connection");
    let out = curl(vec![
        "--http2-prior-knowledge".into(),
        url.clone(),
        "-w".into(),
        " %{http_version}".into(),
    ])
    .await;
    assert_eq!(out, "a 2");
    // X-Forwarded-*: For appended, Proto and Port set, trace id made or kept.
    let answer = get(
        port,
        "/headers",
        &[
            ("x-forwarded-for", "203.0.113.9"),
            ("connection", "keep-alive, x-drop"),
            ("x-drop", "1"),
        ],
    )
    .await;
    let headers: serde_json::Value = serde_json::from_str(&answer.body).expect("json");
    assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-port"], port.to_string());
    assert_eq!(headers["host"], "example.com");
    assert!(
        headers.get("x-drop").is_none(),
        "fields named by Connection are hop-by-hop: {headers}"
    );
    let trace = headers["x-amzn-trace-id"].as_str().expect("trace id");
    let parts: Vec<&str> = trace
        .strip_prefix("Root=1-")
        .expect("Root=1-")
        .split('-')
        .collect();
    assert!(
        parts.len() == 2 && parts[0].len() == 8 && parts[1].len() == 24,
        "{trace}"
    );
    let answer = get(
        port,
        "/headers",
        &[(
            "x-amzn-trace-id",
            "Root=1-5759e988-bd862e3fe1be46a994272793",
        )],
    )
    .await;
    let headers: serde_json::Value = serde_json::from_str(&answer.body).expect("json");
    assert_eq!(
        headers["x-amzn-trace-id"],
        "Root=1-5759e988-bd862e3fe1be46a994272793"
    );
    // A malformed request gets 400.
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    raw.write_all(b"GET / HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    let mut reply = vec![0u8; 1024];
    let read = raw.read(&mut reply).await.expect("read");
    assert!(
        String::from_utf8_lossy(&reply[..read]).starts_with("HTTP/1.1 400"),
        "no Host: 400"
    );
    let metrics = plane.metrics().render_prometheus();
    assert!(
        metrics.contains("flotilla_lb_httpcode_target_2xx_total{target_group=\"tg\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("flotilla_lb_httpcode_elb_4xx_total{load_balancer=\"web\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_alpn_serves_h2_and_http1() {
    let backend = Backend::start("secure").await;
    let port = free_port();
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let mut config = alb(port, &[&backend], json!({"HealthCheckEnabled": false}));
    let listener = &mut config["LoadBalancers"][0]["Listeners"][0];
    listener["Protocol"] = json!("HTTPS");
    listener["Certificates"] = json!([{"CertificatePem": certified.cert.pem(), "PrivateKeyPem": certified.key_pair.serialize_pem()}]);
    let plane = plane();
    plane
        .apply(snapshot(config.clone(), 1))
        .await
        .expect("applied");
    let url = format!("https://localhost:{port}/headers");
    let resolve = format!("localhost:{port}:127.0.0.1");
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let out = curl(vec![
            "-k".into(),
            "--resolve".into(),
            resolve.clone(),
            flag.into(),
            url.clone(),
            "-w".into(),
            "\n%{http_version}".into(),
        ])
        .await;
        let (body, got) = out.rsplit_once('\n').expect("two parts");
        assert_eq!(got, version, "{flag}");
        let headers: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(headers["x-forwarded-proto"], "https");
    }
    // An invalid certificate is refused as a whole, and TLS keeps serving.
    let mut bad = config.clone();
    bad["LoadBalancers"][0]["Listeners"][0]["Certificates"][0]["PrivateKeyPem"] =
        json!("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
    let error = plane.apply(snapshot(bad, 2)).await.expect_err("refused");
    assert!(
        error
            .to_string()
            .contains(&format!("listener {port}: invalid certificate")),
        "{error}"
    );
    let out = curl(vec![
        "-k".into(),
        "--resolve".into(),
        resolve,
        url,
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{http_code}".into(),
    ])
    .await;
    assert_eq!(out, "200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_is_tunnelled() {
    let backend = Backend::start("ws").await;
    let port = free_port();
    let plane = plane();
    plane
        .apply(snapshot(
            alb(port, &[&backend], json!({"HealthCheckEnabled": false})),
            1,
        ))
        .await
        .expect("applied");
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream
        .write_all(b"GET /chat HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .expect("write");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.expect("read head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    for message in [&b"hello"[..], b"over the tunnel"] {
        stream.write_all(message).await.expect("write");
        let mut echoed = vec![0u8; message.len()];
        stream.read_exact(&mut echoed).await.expect("echo");
        assert_eq!(echoed, message);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_responses_redirects_and_elb_errors() {
    let backend = Backend::start("a").await;
    let port = free_port();
    let mut config = alb(port, &[&backend], json!({"HealthCheckEnabled": false}));
    config["LoadBalancers"][0]["Attributes"] = json!({"idle_timeout.timeout_seconds": "1"});
    config["LoadBalancers"][0]["Listeners"][0]["Rules"] = json!([
        {"Priority": 1, "Conditions": [{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/maintenance"]}}],
         "Actions": [{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "503", "ContentType": "application/json", "MessageBody": "{\"down\":true}"}}]},
        {"Priority": 2, "Conditions": [{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/old/*"]}}],
         "Actions": [{"Type": "redirect", "RedirectConfig": {"Protocol": "HTTPS", "Port": "443", "Path": "/new/#{path}", "StatusCode": "HTTP_301"}}]},
        {"Priority": 3, "Conditions": [{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/empty"]}}],
         "Actions": [{"Type": "forward", "TargetGroupArn": "empty"}]}
    ]);
    config["TargetGroups"]
        .as_array_mut()
        .expect("groups")
        .push(json!({"TargetGroupArn": "empty", "Protocol": "HTTP", "Port": 80}));
    let plane = plane();
    plane
        .apply(snapshot(config.clone(), 1))
        .await
        .expect("applied");
    let answer = get(port, "/maintenance", &[]).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (503, "{\"down\":true}")
    );
    assert_eq!(answer.headers["content-type"], "application/json");
    let answer = get(port, "/old/a/b?x=1", &[]).await;
    assert_eq!(answer.status, 301);
    assert_eq!(
        answer.headers["location"],
        "https://example.com/new/old/a/b?x=1"
    );
    // No target at all: ALB's own 503 page.
    let answer = get(port, "/empty", &[]).await;
    assert_eq!(answer.status, 503);
    assert!(
        answer.body.contains("503 Service Temporarily Unavailable"),
        "{}",
        answer.body
    );
    assert_eq!(answer.headers["server"], "awselb/2.0");
    // A target slower than the idle timeout: 504.
    assert_eq!(get(port, "/slow?ms=3000", &[]).await.status, 504);
    // A target that refuses connections: 502.
    let dead_port = free_port();
    config["TargetGroups"][0]["Targets"] =
        json!([{"Id": "dead", "Address": "127.0.0.1", "Port": dead_port}]);
    plane.apply(snapshot(config, 2)).await.expect("applied");
    let answer = get(port, "/", &[]).await;
    assert_eq!(answer.status, 502);
    assert!(answer.body.contains("502 Bad Gateway"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_groups_split_ninety_ten_and_stickiness_holds() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let port = free_port();
    let config = json!({
        "LoadBalancers": [{"Name": "web", "Type": "application", "BindAddress": "127.0.0.1",
            "Listeners": [{"Port": port, "Protocol": "HTTP",
                "DefaultActions": [{"Type": "forward", "ForwardConfig": {"TargetGroups": [
                    {"TargetGroupArn": "blue", "Weight": 90}, {"TargetGroupArn": "green", "Weight": 10}]}}],
                "Rules": [{"Priority": 1, "Conditions": [{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/sticky*"]}}],
                    "Actions": [{"Type": "forward", "TargetGroupArn": "both"}]}]}]}],
        "TargetGroups": [
            {"TargetGroupArn": "blue", "Protocol": "HTTP", "Port": a.address.port(), "HealthCheckEnabled": false, "Targets": [{"Id": "a", "Address": "127.0.0.1"}]},
            {"TargetGroupArn": "green", "Protocol": "HTTP", "Port": b.address.port(), "HealthCheckEnabled": false, "Targets": [{"Id": "b", "Address": "127.0.0.1"}]},
            {"TargetGroupArn": "both", "Protocol": "HTTP", "Port": 80, "HealthCheckEnabled": false,
             "Attributes": {"stickiness.enabled": "true", "stickiness.type": "lb_cookie"},
             "Targets": [{"Id": "a", "Address": "127.0.0.1", "Port": a.address.port()}, {"Id": "b", "Address": "127.0.0.1", "Port": b.address.port()}]}
        ]
    });
    let plane = plane();
    plane.apply(snapshot(config, 1)).await.expect("applied");
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..2_000 {
        *counts.entry(get(port, "/", &[]).await.body).or_default() += 1;
    }
    let share = counts["a"] as f64 / 2_000.0;
    assert!((share - 0.9).abs() < 0.03, "90/10 gave {counts:?}");
    let first = get(port, "/sticky", &[]).await;
    let cookie = first
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().expect("ascii"))
        .find(|c| c.starts_with("AWSALB="))
        .expect("AWSALB cookie")
        .to_owned();
    let pair = cookie.split(';').next().expect("name=value").to_owned();
    for _ in 0..20 {
        let again = get(port, "/sticky", &[("cookie", &pair)]).await;
        assert_eq!(again.body, first.body, "stickiness holds");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_target_is_taken_out_and_put_back() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let port = free_port();
    let plane = plane();
    let mut events = plane.subscribe_health();
    plane
        .apply(snapshot(alb(port, &[&a, &b], fast_checks()), 1))
        .await
        .expect("applied");
    assert!(
        until_all(&plane, "healthy", 2, Duration::from_secs(5)).await,
        "both healthy after one check"
    );
    b.healthy.store(false, SeqCst);
    let out = eventually(Duration::from_secs(15), async || {
        plane
            .target_health()
            .await
            .iter()
            .any(|t| t.target.id == "b" && t.health.state.as_str() == "unhealthy")
    })
    .await;
    assert!(out, "b reported unhealthy");
    let health = plane.target_health().await;
    let b_health = health.iter().find(|t| t.target.id == "b").expect("b");
    assert_eq!(
        b_health.health.reason.map(|r| r.as_str()),
        Some("Target.ResponseCodeMismatch")
    );
    assert_eq!(
        b_health.health.description.as_deref(),
        Some("Health checks failed with these codes: [500]")
    );
    for _ in 0..20 {
        assert_eq!(get(port, "/", &[]).await.body, "a", "b is out of rotation");
    }
    b.healthy.store(true, SeqCst);
    assert!(
        until_all(&plane, "healthy", 2, Duration::from_secs(15)).await,
        "b back after two passes"
    );
    let bodies: Vec<String> = futures_bodies(port, 10).await;
    assert!(
        bodies.iter().any(|body| body == "b"),
        "b back in rotation: {bodies:?}"
    );
    // The embedding process saw every change with its reason.
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push((
            event.target.id,
            event.health.state.as_str(),
            event.health.reason.map(|r| r.as_str()),
        ));
    }
    assert!(
        seen.contains(&("b".into(), "unhealthy", Some("Target.ResponseCodeMismatch"))),
        "{seen:?}"
    );
    assert!(seen.contains(&("b".into(), "healthy", None)), "{seen:?}");
}

async fn futures_bodies(port: u16, count: usize) -> Vec<String> {
    let mut bodies = Vec::new();
    for _ in 0..count {
        bodies.push(get(port, "/", &[]).await.body);
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_target_unhealthy_fails_open() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    a.healthy.store(false, SeqCst);
    b.healthy.store(false, SeqCst);
    let port = free_port();
    let plane = plane();
    plane
        .apply(snapshot(alb(port, &[&a, &b], fast_checks()), 1))
        .await
        .expect("applied");
    assert!(until_all(&plane, "unhealthy", 2, Duration::from_secs(15)).await);
    let bodies = futures_bodies(port, 10).await;
    assert!(
        bodies.contains(&"a".to_owned()) && bodies.contains(&"b".to_owned()),
        "fail-open uses all: {bodies:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregistration_delay_lets_in_flight_requests_finish() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let port = free_port();
    let plane = plane();
    let group = json!({"HealthCheckEnabled": false, "Attributes": {"deregistration_delay.timeout_seconds": "10"}});
    plane
        .apply(snapshot(alb(port, &[&a], group.clone()), 1))
        .await
        .expect("applied");
    let slow = tokio::spawn(async move { get(port, "/slow?ms=2000", &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // a is replaced by b while the slow request is in flight on a.
    plane
        .apply(snapshot(alb(port, &[&b], group), 2))
        .await
        .expect("applied");
    let health = plane.target_health().await;
    let a_health = health
        .iter()
        .find(|t| t.target.id == "a")
        .expect("a still described");
    assert_eq!(a_health.health.state.as_str(), "draining");
    assert_eq!(
        a_health.health.reason.map(|r| r.as_str()),
        Some("Target.DeregistrationInProgress")
    );
    for _ in 0..5 {
        assert_eq!(get(port, "/", &[]).await.body, "b", "new requests go to b");
    }
    let answer = slow.await.expect("joined");
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, "a"),
        "the in-flight request finished"
    );
    // With nothing in flight, draining completes before the 10 s delay.
    assert!(
        eventually(Duration::from_secs(3), async || plane
            .target_health()
            .await
            .iter()
            .all(|t| t.target.id != "a"))
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_ends_in_flight_requests_at_the_delay() {
    let a = Backend::start("a").await;
    let port = free_port();
    let plane = plane();
    let group = json!({"HealthCheckEnabled": false, "Attributes": {"deregistration_delay.timeout_seconds": "1"}});
    plane
        .apply(snapshot(alb(port, &[&a], group.clone()), 1))
        .await
        .expect("applied");
    let started = Instant::now();
    let slow = tokio::spawn(async move { try_get(port, "/slow?ms=10000", &[]).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    plane
        .apply(snapshot(alb(port, &[], group), 2))
        .await
        .expect("applied");
    let outcome = slow.await.expect("joined");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed at the delay, not after 10 s"
    );
    assert!(
        outcome.map_or(true, |answer| answer.status == 502),
        "cut off"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_snapshots_are_refused_and_the_old_one_keeps_serving() {
    let a = Backend::start("a").await;
    let port = free_port();
    let plane = plane();
    let good = alb(port, &[&a], json!({"HealthCheckEnabled": false}));
    plane
        .apply(snapshot(good.clone(), 1))
        .await
        .expect("applied");
    // A port someone else holds: refused, naming it; our port still serves.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_port = taken.local_addr().expect("address").port();
    let mut busy = good.clone();
    busy["LoadBalancers"][0]["Listeners"].as_array_mut().expect("listeners").push(json!(
        {"Port": taken_port, "Protocol": "HTTP", "DefaultActions": [{"Type": "forward", "TargetGroupArn": "tg"}]}));
    let error = plane.apply(snapshot(busy, 2)).await.expect_err("refused");
    assert!(
        error
            .to_string()
            .contains(&format!("cannot listen on 127.0.0.1:{taken_port}")),
        "{error}"
    );
    assert_eq!(plane.version(), 1);
    assert_eq!(get(port, "/", &[]).await.body, "a");
    // An invalid rule: refused with ELBv2's reason.
    let mut invalid = good.clone();
    invalid["LoadBalancers"][0]["Listeners"][0]["DefaultActions"] =
        json!([{"Type": "forward", "TargetGroupArn": "nope"}]);
    let error = plane
        .apply(snapshot(invalid, 3))
        .await
        .expect_err("refused");
    assert!(
        error
            .to_string()
            .contains("target group \"nope\" is not in the snapshot"),
        "{error}"
    );
    // An older version: refused.
    assert!(matches!(
        plane.apply(snapshot(good.clone(), 1)).await,
        Err(flotilla_lb::ApplyError::Stale {
            current: 1,
            offered: 1
        })
    ));
    assert_eq!(get(port, "/", &[]).await.body, "a");
    // Removing the listener closes its port; adding one binds it.
    let new_port = free_port();
    let mut moved = good;
    moved["LoadBalancers"][0]["Listeners"][0]["Port"] = json!(new_port);
    let report = plane.apply(snapshot(moved, 4)).await.expect("applied");
    assert_eq!(report.listeners_opened.len(), 1);
    assert_eq!(report.listeners_closed.len(), 1);
    assert!(
        eventually(Duration::from_secs(2), async || try_get(port, "/", &[])
            .await
            .is_err())
        .await,
        "old port closed"
    );
    assert_eq!(get(new_port, "/", &[]).await.body, "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_load_balancer_forwards_tcp_and_udp() {
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let echo_port = echo.local_addr().expect("address").port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    let udp_echo = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let udp_port = udp_echo.local_addr().expect("address").port();
    tokio::spawn(async move {
        let mut buffer = [0u8; 1500];
        while let Ok((length, from)) = udp_echo.recv_from(&mut buffer).await {
            let _ = udp_echo.send_to(&buffer[..length], from).await;
        }
    });
    let (tcp_port, nlb_udp_port) = (free_port(), free_port());
    let config = json!({
        "LoadBalancers": [{"Name": "net", "Type": "network", "BindAddress": "127.0.0.1", "Listeners": [
            {"Port": tcp_port, "Protocol": "TCP", "DefaultActions": [{"Type": "forward", "TargetGroupArn": "tcp"}]},
            {"Port": nlb_udp_port, "Protocol": "UDP", "DefaultActions": [{"Type": "forward", "TargetGroupArn": "udp"}]}]}],
        "TargetGroups": [
            {"TargetGroupArn": "tcp", "Protocol": "TCP", "Port": echo_port, "HealthCheckIntervalSeconds": 5, "HealthCheckTimeoutSeconds": 2, "Targets": [{"Id": "i-1", "Address": "127.0.0.1"}]},
            {"TargetGroupArn": "udp", "Protocol": "UDP", "Port": udp_port, "HealthCheckEnabled": false, "Targets": [{"Id": "i-2", "Address": "127.0.0.1"}]}
        ]
    });
    let plane = plane();
    plane.apply(snapshot(config, 1)).await.expect("applied");
    let tcp_healthy = eventually(Duration::from_secs(5), async || {
        plane
            .target_health()
            .await
            .iter()
            .any(|t| t.target.id == "i-1" && t.health.state.as_str() == "healthy")
    })
    .await;
    assert!(tcp_healthy, "TCP health check passed");
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", tcp_port))
        .await
        .expect("connect");
    let payload = vec![7u8; 256 * 1024];
    let writer_payload = payload.clone();
    let (mut read, mut write) = stream.split();
    let send = async move {
        write.write_all(&writer_payload).await.expect("write");
        write.shutdown().await.expect("half close");
    };
    let receive = async {
        let mut echoed = Vec::new();
        read.read_to_end(&mut echoed).await.expect("read");
        echoed
    };
    let ((), echoed) = tokio::join!(send, receive);
    assert_eq!(echoed, payload, "TCP bytes both ways, half-close passed on");
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    client
        .connect(("127.0.0.1", nlb_udp_port))
        .await
        .expect("connect");
    client.send(b"ping").await.expect("send");
    let mut buffer = [0u8; 16];
    let length = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buffer))
        .await
        .expect("in time")
        .expect("recv");
    assert_eq!(&buffer[..length], b"ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_targets_are_checked_evenly() {
    // 1,000 distinct targets: one real hyper server each, on its own port.
    let mut backends = Vec::new();
    for index in 0..1_000 {
        backends.push(Backend::start(&format!("t{index}")).await);
    }
    let port = free_port();
    let refs: Vec<&Backend> = backends.iter().collect();
    let plane = plane();
    plane
        .apply(snapshot(alb(port, &refs, fast_checks()), 1))
        .await
        .expect("applied");
    assert!(
        until_all(&plane, "healthy", 1_000, Duration::from_secs(10)).await,
        "all 1,000 healthy"
    );
    // Then one check per target per 5 s interval, spread: count what arrives
    // in one whole interval and in its busiest 100 ms.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let end = Instant::now();
    let mut arrivals: Vec<Instant> = backends
        .iter()
        .flat_map(|backend| backend.checks.lock().expect("lock").clone())
        .filter(|at| *at >= start && *at < end)
        .collect();
    arrivals.sort();
    assert!(
        (900..=1_100).contains(&arrivals.len()),
        "{} checks in one interval",
        arrivals.len()
    );
    let busiest = arrivals
        .iter()
        .map(|at| {
            arrivals
                .iter()
                .filter(|other| **other >= *at && **other < *at + Duration::from_millis(100))
                .count()
        })
        .max()
        .unwrap_or(0);
    // Evenly paced: 20 per 100 ms; a burst would be hundreds.
    assert!(busiest <= 60, "{busiest} checks within 100 ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_replacement_under_wrk_loses_no_request() {
    if std::process::Command::new("wrk")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("wrk is needed: apt-get install wrk (cargo xtask test installs it)");
    }
    let port = free_port();
    let plane = plane();
    let group = json!({"HealthCheckPath": "/health", "HealthCheckIntervalSeconds": 5, "HealthCheckTimeoutSeconds": 2,
                       "Attributes": {"deregistration_delay.timeout_seconds": "5"}});
    let mut generation = vec![Backend::start("g0-a").await, Backend::start("g0-b").await];
    plane
        .apply(snapshot(
            alb(port, &generation.iter().collect::<Vec<_>>(), group.clone()),
            1,
        ))
        .await
        .expect("applied");
    assert!(until_all(&plane, "healthy", 2, Duration::from_secs(5)).await);
    let load = tokio::process::Command::new("wrk")
        .args(["-t", "2", "-c", "16", "-d", "8s", "--latency"])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output();
    let roll = async {
        let mut version = 1;
        for round in 1..=3 {
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            let next = vec![
                Backend::start(&format!("g{round}-a")).await,
                Backend::start(&format!("g{round}-b")).await,
            ];
            // New targets join; once healthy the old ones are deregistered
            // and drain; the old backends stop only after draining.
            let both: Vec<&Backend> = generation.iter().chain(next.iter()).collect();
            version += 1;
            plane
                .apply(snapshot(alb(port, &both, group.clone()), version))
                .await
                .expect("applied");
            assert!(
                eventually(Duration::from_secs(5), async || plane
                    .target_health()
                    .await
                    .iter()
                    .filter(|t| t.health.state.as_str() == "healthy")
                    .count()
                    == 4)
                .await,
                "new generation healthy"
            );
            version += 1;
            plane
                .apply(snapshot(
                    alb(port, &next.iter().collect::<Vec<_>>(), group.clone()),
                    version,
                ))
                .await
                .expect("applied");
            let old = std::mem::replace(&mut generation, next);
            assert!(
                eventually(Duration::from_secs(6), async || plane
                    .target_health()
                    .await
                    .len()
                    == 2)
                .await,
                "old drained"
            );
            drop(old);
        }
    };
    let (output, ()) = tokio::join!(load, roll);
    let output = output.expect("wrk ran");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        !report.contains("Non-2xx"),
        "non-2xx answers under a rolling replacement:\n{report}"
    );
    assert!(
        !report.contains("Socket errors"),
        "socket errors under a rolling replacement:\n{report}"
    );
    let requests: u64 = report
        .lines()
        .find_map(|line| {
            line.trim()
                .split_once(" requests in")
                .map(|(count, _)| count.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    assert!(requests > 1_000, "wrk made {requests} requests:\n{report}");
}
