"""deploy/k8s, checked offline: yamllint, the Kubernetes API's own schemas (kubernetes-validate
ships them), and what the manifests must say for replpool to work and be isolated there
(docs/deploy.md, "Kubernetes"). Run by `make test` with the venv of tests/requirements.txt."""

import pathlib
import subprocess
import sys
import tomllib
import unittest

import kubernetes_validate
import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# The oldest Kubernetes with user namespaces on by default (hostUsers: false, which procMount
# Unmasked needs), and the newest whose schemas the pinned kubernetes-validate ships.
KUBERNETES_VERSIONS = ["1.33.0", kubernetes_validate.utils.latest_version()]


def manifest_files():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [K8S / name for name in kustomization["resources"]]


def resources():
    found = []
    for path in manifest_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                found.append((path.name, doc))
    return found


def only(kind, name=None):
    matches = [r for _, r in resources() if r["kind"] == kind
               and (name is None or r["metadata"]["name"] == name)]
    if len(matches) != 1:
        raise AssertionError(f"expected one {kind} {name or ''}, found {len(matches)}")
    return matches[0]


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


class Manifests(unittest.TestCase):
    def test_every_file_passes_yamllint(self):
        config = YamlLintConfig(file=str(K8S / ".yamllint.yaml"))
        for path in sorted(K8S.glob("*.yaml")):
            problems = [f"{path.name}:{p.line}:{p.column} {p.desc} ({p.rule})"
                        for p in linter.run(path.read_text(), config, str(path))]
            self.assertEqual(problems, [], path.name)

    def test_every_resource_matches_the_kubernetes_schema(self):
        found = resources()
        self.assertGreaterEqual(len(found), 9)
        for version in KUBERNETES_VERSIONS:
            for file, resource in found:
                with self.subTest(file=file, version=version):
                    try:
                        kubernetes_validate.validate(resource, version, strict=True)
                    except kubernetes_validate.ValidationError as e:
                        self.fail(f"{file} against Kubernetes {version}: {e.message} "
                                  f"at {'.'.join(map(str, e.path))}")

    def test_the_kustomization_lists_every_manifest(self):
        listed = {p.name for p in manifest_files()}
        on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", ".yamllint.yaml"}
        self.assertEqual(listed, on_disk)

    def test_nginx_conf_is_deploy_nginx_rendered_for_this_namespace(self):
        kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
        [generator] = kustomization["configMapGenerator"]
        self.assertEqual(generator["name"], "replpool-nginx")
        self.assertEqual(generator["files"], ["nginx.conf"])
        rendered = subprocess.run(
            [sys.executable, str(ROOT / "deploy" / "nginx" / "render.py"),
             "--kubernetes", kustomization["namespace"],
             "--config", str(ROOT / "deploy" / "docker" / "config.toml")],
            capture_output=True, text=True, check=True).stdout
        self.assertEqual((K8S / "nginx.conf").read_text(), rendered,
                         "deploy/k8s/nginx.conf is stale: run `make k8s-nginx`")
        nodes = only("StatefulSet", "replpool")
        port = nodes["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
        domain = f"{nodes['spec']['serviceName']}.{kustomization['namespace']}.svc.cluster.local"
        self.assertIn(f'"$replpool_node.{domain}:{port}"', rendered)
        self.assertIn(f"server replpool.{kustomization['namespace']}.svc.cluster.local:{port} ",
                      rendered)
        proxy = only("Deployment", "replpool-nginx")["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in proxy["volumes"]}
        self.assertEqual(volumes["config"]["configMap"]["name"], "replpool-nginx")
        listen = only("Service", "replpool-nginx")["spec"]["ports"][0]["targetPort"]
        self.assertIn("listen 8080;", rendered)
        self.assertIn(listen, (8080, "http"))

    def test_the_nodes_are_named_by_their_pods_and_reachable_by_name(self):
        nodes = only("StatefulSet", "replpool")
        labels = nodes["spec"]["template"]["metadata"]["labels"]
        self.assertEqual(nodes["spec"]["selector"]["matchLabels"], labels)
        container = nodes["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e for e in container["env"]}
        self.assertEqual(env["REPLPOOL_SERVER_NODE"]["valueFrom"],
                         {"fieldRef": {"fieldPath": "metadata.name"}})
        self.assertEqual(container["readinessProbe"]["httpGet"]["path"], "/readyz")
        self.assertEqual(container["livenessProbe"]["httpGet"]["path"], "/healthz")
        # Per-pod DNS names come from the StatefulSet's governing headless Service, which must
        # keep a draining (not ready) pod's name so its sessions stay reachable.
        headless = only("Service", nodes["spec"]["serviceName"])
        self.assertEqual(headless["spec"]["clusterIP"], "None")
        self.assertIs(headless["spec"]["publishNotReadyAddresses"], True)
        self.assertTrue(selects(headless["spec"]["selector"], labels))
        self.assertTrue(selects(only("Service", "replpool")["spec"]["selector"], labels))
        self.assertTrue(selects(
            only("PodDisruptionBudget")["spec"]["selector"]["matchLabels"], labels))
        proxy = only("Deployment", "replpool-nginx")["spec"]
        self.assertTrue(selects(only("Service", "replpool-nginx")["spec"]["selector"],
                                proxy["template"]["metadata"]["labels"]))
        self.assertFalse(selects(headless["spec"]["selector"],
                                 proxy["template"]["metadata"]["labels"]))

    def test_the_grace_period_outlasts_the_servers_drain(self):
        pod = only("StatefulSet", "replpool")["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        grace_ms = env.get("REPLPOOL_SERVER_SHUTDOWN_GRACE_MS")
        for config in (ROOT / "deploy" / "docker" / "config.toml", ROOT / "config.toml"):
            if grace_ms is None:
                grace_ms = tomllib.loads(config.read_text()).get("server", {}).get(
                    "shutdown_grace_ms")
        self.assertGreater(pod["terminationGracePeriodSeconds"] * 1000, int(grace_ms))

    def test_the_nodes_run_with_row_b_isolation(self):
        pod = only("StatefulSet", "replpool")["spec"]["template"]["spec"]
        container = pod["containers"][0]
        self.assertIs(pod["hostUsers"], False)
        self.assertIs(pod["securityContext"]["runAsNonRoot"], True)
        self.assertIn(pod["securityContext"]["seccompProfile"]["type"],
                      ("Localhost", "Unconfined"))
        security = container["securityContext"]
        self.assertEqual(security["procMount"], "Unmasked")
        self.assertEqual(security["capabilities"]["drop"], ["ALL"])
        self.assertIs(security["allowPrivilegeEscalation"], False)
        self.assertIs(security["readOnlyRootFilesystem"], True)
        # A read-only root needs a writable /tmp: the server's state directory is there.
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        self.assertIn("emptyDir", volumes[mounts["/tmp"]])
        self.assertIn("limits", container["resources"])
        tokens = {e["name"]: e.get("value") for e in container["env"]}[
            "REPLPOOL_AUTH_TOKENS_FILE"]
        secret_volume = volumes[mounts[str(pathlib.PurePosixPath(tokens).parent)]]["secret"]
        self.assertEqual(secret_volume["defaultMode"], 0o440)
        self.assertIn(pathlib.PurePosixPath(tokens).name,
                      only("Secret", secret_volume["secretName"])["stringData"])

    def test_the_nodes_have_no_egress(self):
        labels = only("StatefulSet", "replpool")["spec"]["template"]["metadata"]["labels"]
        policies = [r for _, r in resources() if r["kind"] == "NetworkPolicy"
                    and selects(r["spec"]["podSelector"]["matchLabels"], labels)]
        self.assertEqual(len(policies), 1)
        self.assertIn("Egress", policies[0]["spec"]["policyTypes"])
        self.assertEqual(policies[0]["spec"].get("egress", []), [])


if __name__ == "__main__":
    unittest.main()
