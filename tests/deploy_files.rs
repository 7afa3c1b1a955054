//! The deployment files are checked, not just written: the compose config passes
//! `chaperone config check`, the Kubernetes manifests validate against the
//! Kubernetes schemas (`kubernetes-validate` from PyPI), and the gateway config
//! embedded in the ConfigMap is the one the binary accepts.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_chaperone");

fn config_check(path: &std::path::Path, envs: &[(&str, &str)]) {
    let out = Command::new(BIN)
        .args(["config", "check", "--offline", path.to_str().unwrap()])
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn compose_gateway_config_is_valid() {
    config_check(
        std::path::Path::new("deploy/compose-chaperone.toml"),
        &[
            ("CHAPERONE_SHOP_DB_PASSWORD", "x"),
            ("CHAPERONE_AUDITOR_TOKEN", "y"),
        ],
    );
}

#[test]
fn kubernetes_manifests_validate_and_embed_a_valid_config() {
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "deploy/kubernetes/chaperone.yaml"])
        .output()
        .expect(
            "kubernetes-validate (pip install kubernetes-validate; scripts/setup-test-env.sh does)",
        );
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    for kind in ["configmap", "deployment", "service", "poddisruptionbudget"] {
        assert!(
            text.contains(&format!("passed for resource {kind}/")),
            "{kind}: {text}"
        );
    }
    assert!(!text.contains("ERROR"), "{text}");

    // The ConfigMap's chaperone.toml, as the pods get it.
    let yaml = std::fs::read_to_string("deploy/kubernetes/chaperone.yaml").unwrap();
    let start = yaml.find("  chaperone.toml: |\n").unwrap() + "  chaperone.toml: |\n".len();
    let body: String = yaml[start..]
        .lines()
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let dir = std::env::temp_dir().join(format!("chp_k8s_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The service account CA only exists in a pod: point at a stand-in.
    let (cert, _) = chaperone_test_cert();
    std::fs::write(dir.join("ca.crt"), cert).unwrap();
    let body = body.replace(
        "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
        dir.join("ca.crt").to_str().unwrap(),
    );
    let path = dir.join("chaperone.toml");
    std::fs::write(&path, body).unwrap();
    config_check(
        &path,
        &[
            ("POD_NAME", "chaperone-7d9c-abcde"),
            ("ORDERS_DB_PASSWORD", "x"),
            ("CHAPERONE_ARCHIVE_SIGNING_KEY", &"11".repeat(32)),
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A throwaway PEM certificate from `chaperone dev-cert`.
fn chaperone_test_cert() -> (String, String) {
    let dir = std::env::temp_dir().join(format!("chp_k8s_cert_{}", std::process::id()));
    let out = Command::new(BIN)
        .args(["dev-cert", "--out", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let cert = std::fs::read_to_string(dir.join("cert.pem")).unwrap();
    let key = std::fs::read_to_string(dir.join("key.pem")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (cert, key)
}
