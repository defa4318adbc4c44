//! Who may ask the observer for what: from another network namespace only the metrics door
//! answers (unless a token is configured); a policy that does not execute deletes nothing
//! through any door, and every run names who asked; clients trust only a daemon run by root
//! and give up on a wedged one.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{hostile::*, purge::*, *};

/// The `[http]` section of the shipped ConfigMap, with its addresses moved to this test's:
/// wildcard addresses to `wildcard` (port 0), loopback ones to `127.0.0.1:0`, the socket into
/// `sockdir`.
fn shipped_http_section(wildcard: &str, sockdir: &Path) -> String {
    let cm = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/configmap.yaml"),
    )
    .unwrap();
    let mut out = String::new();
    let mut inside = false;
    for line in cm.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == "[http]";
        }
        if !inside {
            continue;
        }
        let line = line.split(" #").next().unwrap().trim_end();
        let moved = if line.starts_with("unix_socket") {
            format!("unix_socket = \"{}\"", sockdir.join("api.sock").display())
        } else if line.contains("\"0.0.0.0:") || line.contains("\"[::]:") {
            let key = line.split('=').next().unwrap().trim();
            format!("{key} = \"{wildcard}:0\"")
        } else if line.contains("\"127.0.0.1:") {
            let key = line.split('=').next().unwrap().trim();
            format!("{key} = \"127.0.0.1:0\"")
        } else {
            line.to_string()
        };
        out.push_str(&moved);
        out.push('\n');
    }
    assert!(out.starts_with("[http]"), "no [http] in the ConfigMap");
    out
}

/// A root with one stale entry `jobs/old` and a policy over it that may delete it by any
/// manual request (so only the doors stand in the way).
fn stale_root(dir: &Path) -> (PathBuf, String) {
    let root = dir.join("root");
    tree(&root.join("jobs/old"), 3);
    age(&root, 5 * DAY);
    let policy = format!(
        "[purge]\nenabled = true\n[[purge.policies]]\nname = \"p\"\nroot = \"{}\"\n\
         match = [\"jobs/*\"]\nmin_age_secs = 3600\nexecute = true\nmanual_execute = true\n",
        root.display()
    );
    (root, policy)
}

fn start_with(dir: &Path, config: &str) -> Observer {
    let cfg = dir.join("observer.toml");
    std::fs::write(&cfg, config).unwrap();
    Observer::start_configured(&["--config", cfg.to_str().unwrap()])
}

const API_PATHS: [(&str, &str); 6] = [
    ("POST", "/purge?policy=p&execute=true"),
    ("GET", "/events?since=1h"),
    ("GET", "/dump"),
    ("GET", "/top"),
    ("GET", "/locks"),
    ("GET", "/stats"),
];

#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: HTTP doors and clients are userspace, the same on every kernel"
)]
fn the_shipped_configuration_serves_only_metrics_to_other_network_namespaces() {
    let ns = Netns::create();
    let dir = tempfile::tempdir().unwrap();
    let (root, policy) = stale_root(dir.path());
    let config = format!(
        "{}{policy}",
        shipped_http_section(&ns.host_addr, dir.path())
    );
    let obs = start_with(dir.path(), &config);
    let reachable: Vec<_> = obs
        .listening
        .iter()
        .filter(|(_, a)| a.starts_with(&format!("{}:", ns.host_addr)))
        .cloned()
        .collect();
    assert!(
        !reachable.is_empty(),
        "the shipped configuration serves nothing to the pod network: {:?}",
        obs.listening
    );
    let mut metrics_ok = false;
    for (door, addr) in &reachable {
        for (method, path) in API_PATHS {
            let (code, body) = ns.curl(method, &format!("http://{addr}{path}"), None);
            assert!(
                matches!(code, 401 | 403 | 404),
                "{method} {path} on the {door} door {addr} from another network namespace \
                 answered {code}: {body:.300}"
            );
        }
        let (code, body) = ns.curl("GET", &format!("http://{addr}/metrics"), None);
        metrics_ok |= code == 200 && body.contains("fsobserver_");
    }
    assert!(metrics_ok, "no door answered /metrics to the pod network");
    assert!(
        root.join("jobs/old/f0").exists(),
        "a request from the network deleted"
    );
    // The node's operator (root on the node) still has the whole API on loopback and the
    // socket.
    let (code, body) = http_get(obs.addr(), "/top");
    assert_eq!(code, 200, "/top on loopback: {body}");
    // But not a web page in root's browser: a request with an Origin, or sent to a
    // DNS-rebinding name that resolves to the loopback.
    for header in ["Origin: http://evil.example", "Host: evil.example:9465"] {
        let out = output_within(
            Command::new("curl")
                .args(["-s", "-m", "20", "-o", "/dev/null", "-w", "%{http_code}"])
                .args(["-H", header])
                .arg(format!("http://{}/top", obs.addr())),
            CHILD_TIMEOUT,
        );
        let code = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(code, "403", "/top on loopback with {header:?}");
    }
    let sock = obs
        .unix_socket()
        .expect("the shipped configuration has a socket");
    let (code, _) = curl_unix(&sock, "GET", "/top");
    assert_eq!(code, 200, "/top on the socket");
}

#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: HTTP doors and clients are userspace, the same on every kernel"
)]
fn a_token_opens_the_api_to_the_network_and_names_the_caller() {
    let ns = Netns::create();
    let dir = tempfile::tempdir().unwrap();
    let (root, policy) = stale_root(dir.path());
    let tokens = dir.path().join("tokens");
    let token = "c2VjcmV0LXRva2VuLWZvci10ZXN0cw-0123456789";
    std::fs::write(&tokens, format!("# name token\nops {token}\n")).unwrap();
    // Without a credential a non-loopback API is refused at start-up, with one clear line.
    let bare = dir.path().join("bare.toml");
    std::fs::write(&bare, format!("[http]\nlisten = \"{}:0\"\n", ns.host_addr)).unwrap();
    let out = observer_cmd(&["config", "check", bare.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "non-loopback API without tokens: {err}"
    );
    assert!(err.contains("http.tokens_file"), "{err}");

    let config = format!(
        "[http]\nlisten = \"{}:0\"\ntokens_file = \"{}\"\n{policy}",
        ns.host_addr,
        tokens.display()
    );
    let mut obs = start_with(dir.path(), &config);
    let addr = obs.addr().to_string();
    for (method, path) in API_PATHS {
        let url = format!("http://{addr}{path}");
        for bad in [None, Some("wrong"), Some(&token[1..])] {
            let (code, body) = ns.curl(method, &url, bad);
            assert_eq!(code, 401, "{method} {path} with token {bad:?}: {body:.300}");
        }
    }
    assert!(root.join("jobs/old/f0").exists());
    let (code, body) = ns.curl("GET", &format!("http://{addr}/top"), Some(token));
    assert_eq!(code, 200, "/top with the token: {body:.300}");
    let (code, body) = ns.curl(
        "POST",
        &format!("http://{addr}/purge?policy=p&execute=true"),
        Some(token),
    );
    assert_eq!(code, 200, "POST /purge with the token: {body:.300}");
    let run: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(run["runs"][0]["requested_by"], "token ops", "{run:#}");
    assert_eq!(verdict(&run["runs"][0], "jobs/old").0, "deleted");
    let audit = obs.wait_for("the audit line of the deletion", |v| {
        v["type"] == "purge" && v["action"] == "deleted"
    });
    assert_eq!(audit["requested_by"], "token ops", "{audit}");
    wait_trash_empty(&root);
    assert!(!root.join("jobs/old").exists());
}

#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: HTTP doors and clients are userspace, the same on every kernel"
)]
fn a_policy_that_does_not_allow_it_deletes_nothing_through_any_door() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    for p in ["never", "auto", "manual"] {
        tree(&root.join(p).join("old"), 2);
    }
    age(&root, 5 * DAY);
    let policy = |name: &str, keys: &str| {
        format!(
            "[[purge.policies]]\nname = \"{name}\"\nroot = \"{}\"\nmatch = [\"{name}/*\"]\n\
             min_age_secs = 3600\n{keys}\n",
            root.display()
        )
    };
    let config = format!(
        "[http]\nunix_socket = \"{}\"\n[purge]\nenabled = true\n{}{}{}",
        dir.path().join("api.sock").display(),
        // execute = false: the law, whatever a request asks.
        policy("never", "execute = false\nmanual_execute = true"),
        // Deletes on its own triggers only.
        policy("auto", "execute = true\nmanual_execute = false"),
        policy("manual", "execute = true\nmanual_execute = true"),
    );
    let mut obs = start_with(dir.path(), &config);
    let sock = obs.unix_socket().expect("socket");
    for name in ["never", "auto"] {
        let path = format!("/purge?policy={name}&execute=true");
        let (code, body) = http_post(obs.addr(), &path);
        assert_eq!(code, 403, "loopback POST {path}: {body}");
        let (code, body) = curl_unix(&sock, "POST", &path);
        assert_eq!(code, 403, "socket POST {path}: {body}");
        let out = observer_cmd(&[
            "purge",
            "--policy",
            name,
            "--execute",
            "--addr",
            &format!("unix:{}", sock.display()),
        ]);
        assert!(!out.status.success(), "observer purge --execute on {name}");
        assert!(
            root.join(name).join("old/f0").exists(),
            "{name}/old was deleted"
        );
        // A dry run is always allowed, and says what it would do.
        let (code, body) = http_post(obs.addr(), &format!("/purge?policy={name}"));
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("would-delete"), "{body}");
    }
    let (code, body) = curl_unix(&sock, "POST", "/purge?policy=manual&execute=true");
    assert_eq!(code, 200, "{body}");
    let run: Value = serde_json::from_str(&body).unwrap();
    let who = run["runs"][0]["requested_by"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        who.starts_with("uid 0 pid ") && who.ends_with(" (unix socket)"),
        "requested_by {who:?}"
    );
    let audit = obs.wait_for("the audit line", |v| {
        v["type"] == "purge" && v["action"] == "deleted"
    });
    assert_eq!(audit["requested_by"].as_str(), Some(who.as_str()));
    wait_trash_empty(&root);
    assert!(!root.join("manual/old").exists());
    let (_, body) = http_post(obs.addr(), "/purge?policy=never");
    assert!(
        body.contains("\"requested_by\":\"uid 0 (loopback)\""),
        "{body}"
    );
}

/// `curl --unix-socket`: (status, body).
fn curl_unix(sock: &Path, method: &str, path: &str) -> (u16, String) {
    let out = output_within(
        Command::new("curl")
            .args([
                "-s",
                "-m",
                "20",
                "-X",
                method,
                "-w",
                "\n%{http_code}",
                "--unix-socket",
            ])
            .arg(sock)
            .arg(format!("http://localhost{path}")),
        CHILD_TIMEOUT,
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// A server run as uid 65534 that claims every lock is healthy (exit code 0), on TCP loopback
/// or a Unix socket.
struct Impostor(std::process::Child, String);

const IMPOSTOR: &str = r#"
import http.server, socketserver, sys, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{"path":"x","known":true,"state":"held","exit_code":0}'
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
where = sys.argv[1]
if where.startswith("unix:"):
    class S(socketserver.UnixStreamServer):
        def get_request(self):
            r, _ = super().get_request(); return r, ("local", 0)
    s = S(where[5:], H)
    print(where, flush=True)
else:
    s = http.server.HTTPServer(("127.0.0.1", 0), H)
    print("127.0.0.1:%d" % s.server_address[1], flush=True)
s.serve_forever()
"#;

impl Impostor {
    fn start(where_: &str) -> Impostor {
        use std::io::BufRead as _;
        let mut child = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["/usr/bin/python3", "-c", IMPOSTOR, where_])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("setpriv python3");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(!line.trim().is_empty(), "the impostor did not start");
        Impostor(child, line.trim().to_string())
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        let _: Result<_, _> = self.0.kill();
        let _: Result<_, _> = self.0.wait();
    }
}

/// `observer lock-status` against `addr`: (exit code, stderr, seconds taken).
fn lock_status(addr: &str) -> (Option<i32>, String, f64) {
    let t = Instant::now();
    let out = output_within(
        Command::new(observer_bin()).args(["lock-status", "--addr", addr, "/var/lib/x.lock"]),
        Duration::from_secs(120),
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
        t.elapsed().as_secs_f64(),
    )
}

#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: HTTP doors and clients are userspace, the same on every kernel"
)]
fn lock_status_trusts_only_a_daemon_run_by_root_and_gives_up_on_a_wedged_one() {
    // A server that accepts and never answers.
    let wedged = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = wedged.local_addr().unwrap().to_string();
    let (code, err, secs) = lock_status(&addr);
    assert_eq!(code, Some(5), "wedged daemon: {err}");
    assert!(
        secs < 20.0,
        "lock-status waited {secs:.1}s on a wedged daemon"
    );
    assert!(
        err.contains("timed out") || err.contains("timeout"),
        "{err}"
    );
    drop(wedged);

    // Servers run by another user that say "healthy, do not steal" (exit 0).
    let tcp = Impostor::start("tcp");
    let (code, err, _) = lock_status(&tcp.1);
    assert_eq!(code, Some(5), "impostor on {}: {err}", tcp.1);
    assert!(err.contains("uid 65534"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    nix::unistd::chown(dir.path(), Some(65534.into()), Some(65534.into())).unwrap();
    let sock = format!("unix:{}", dir.path().join("s").display());
    let unix = Impostor::start(&sock);
    let (code, err, _) = lock_status(&unix.1);
    assert_eq!(code, Some(5), "impostor on {sock}: {err}");
    assert!(err.contains("uid 65534"), "{err}");
}
