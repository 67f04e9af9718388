"""deploy/: the files are consistent with each other and with the package (the production topology
itself runs as local processes in test_production.py)."""

import configparser
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
SERVICES = ["reduction-code-server", "reduction-webserver", "reduction-daemon"]


def env_example() -> dict[str, str]:
    values = {}
    for line in (DEPLOY / "env.example").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            key, value = line.split("=", 1)
            values[key] = value.strip()
    return values


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(DEPLOY / "systemd" / name)
    return parser


def test_every_variable_the_deploy_files_read_is_in_env_example():
    wanted = set()
    for name in ("dagster.yaml", "workspace.yaml"):
        wanted |= set(re.findall(r"\{env: ([A-Z_]+)\}", (DEPLOY / name).read_text()))
    assert wanted and wanted <= set(env_example()), wanted - set(env_example())
    assert env_example()["DAGSTER_HOME"] == env_example()["REDUCTION_HOME"] + "/dagster"


def test_services_run_in_the_foreground_and_are_stopped_as_a_group():
    for name in SERVICES:
        service = unit(f"{name}.service")["Service"]
        assert service["ExecStart"].startswith("/") and "&" not in service["ExecStart"], name
        assert service["KillMode"] == "control-group" and service["EnvironmentFile"], name
        assert service["Restart"] == "on-failure", name
    for name in ("reduction-webserver", "reduction-daemon"):
        assert "reduction-code-server.service" in unit(f"{name}.service")["Unit"]["After"]
    assert "deploy/workspace.yaml" in unit("reduction-daemon.service")["Service"]["ExecStart"]


@pytest.mark.parametrize("path", ["deploy/dagster.yaml", "dagster.yaml"])
def test_backfill_runs_are_throttled_below_the_run_limit(path):
    import yaml

    runs = yaml.safe_load((ROOT / path).read_text())["concurrency"]["runs"]
    (limit,) = [entry for entry in runs["tag_concurrency_limits"] if entry["key"] == "dagster/backfill"]
    assert "value" not in limit and 1 <= limit["limit"] < runs["max_concurrent_runs"]


PACKAGE_DEFAULT = ROOT / "reduction_assets" / "support" / "defaults" / "dagster.yaml"


def test_the_package_default_instance_config_is_the_repository_root_file():
    # A relative symlink in the checkout: the package ships the root file's bytes (the wheel and the
    # image hold a copy), and nothing else holds the embedded settings.
    assert PACKAGE_DEFAULT.is_symlink() and PACKAGE_DEFAULT.readlink() == Path("../../../dagster.yaml")
    assert PACKAGE_DEFAULT.read_bytes() == (ROOT / "dagster.yaml").read_bytes()
    from importlib import resources

    shipped = resources.files("reduction_assets.support") / "defaults" / "dagster.yaml"
    assert shipped.read_bytes() == (ROOT / "dagster.yaml").read_bytes()


def test_the_root_instance_config_is_dagsters_schema_with_sqlite_storage_in_its_folder(tmp_path, monkeypatch):
    from dagster import DagsterInstance

    from reduction_assets.support.home import Home

    # Another DAGSTER_HOME in the environment does not move the storage: it is the folder's.
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "elsewhere"))
    home = Home(tmp_path / "home").ensure()
    assert (home.dagster / "dagster.yaml").read_bytes() == (ROOT / "dagster.yaml").read_bytes()
    instance = DagsterInstance.from_config(str(home.dagster))  # an unknown key fails here
    try:
        assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        assert type(instance.event_log_storage).__name__ == "SqliteEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "SqliteScheduleStorage"
        assert (home.dagster / "history" / "runs.db").exists()
        assert (home.dagster / "schedules" / "schedules.db").exists()
        assert instance.compute_log_manager._base_dir == str(home.dagster / "storage")
        assert instance.get_settings("sensors") == {"use_threads": True, "num_workers": 2}
        assert instance.get_settings("backfills") == {"use_threads": False}
        runs = instance.get_concurrency_config().run_queue_config
        assert runs.max_concurrent_runs == 2
        assert runs.tag_concurrency_limits == [{"key": "dagster/backfill", "limit": 1}]
    finally:
        instance.dispose()
    assert not (tmp_path / "elsewhere").exists()


def test_make_dev_and_demo_give_their_home_the_root_instance_config():
    makefile = (ROOT / "Makefile").read_text()
    (settings,) = re.findall(r"^define instance_settings\n(.*?)^endef", makefile, re.M | re.S)
    assert "install -m 644 dagster.yaml $(1)/dagster/dagster.yaml" in settings
    for target in ("demo", "dev"):
        (recipe,) = re.findall(rf"^{target}: .*?\n((?:\t.*\n)+)", makefile, re.M)
        assert "$(call instance_settings," in recipe, target


def requirement_pins() -> dict[str, str]:
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (DEPLOY / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_the_lock_pins_every_requirement_of_setup_py_within_its_bounds():
    import setuptools
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    captured = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
        exec(compile((ROOT / "setup.py").read_text(), "setup.py", "exec"), {"__name__": "__main__"})
    pins = requirement_pins()
    assert "reduction-assets" not in pins
    wanted = captured["install_requires"] + [
        r for extra in ("dev", "bench") for r in captured["extras_require"][extra]
    ]
    for requirement in map(Requirement, wanted):
        name = canonicalize_name(requirement.name)
        assert name in pins and pins[name] in requirement.specifier, (str(requirement), pins.get(name))


def test_every_install_takes_the_lock():
    makefile = (ROOT / "Makefile").read_text()
    (stamp,) = re.findall(r"^\$\(STAMP\): (.*)\n((?:\t.*\n)+)", makefile, re.M)
    assert "$(CONSTRAINTS)" in stamp[0].split() and "CONSTRAINTS := deploy/constraints.txt" in makefile
    installs = re.findall(r"pip install .*'\.\[.*", makefile)
    lock = re.findall(r"^lock:\n((?:\t.*\n)+)", makefile, re.M)[0]
    assert installs and all("-c $(CONSTRAINTS)" in line for line in installs if line not in lock)
    assert "pip freeze --exclude-editable" in lock
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    (install,) = re.findall(r"^RUN pip install .*$", dockerfile, re.M)
    assert "-c deploy/constraints.txt" in install
    before = dockerfile.split(install)[0]
    assert re.search(r"^COPY .*\bdeploy/constraints\.txt\b", before, re.M)
    # The package's default instance config is a symlink to the root file: copied before the install.
    assert re.search(r"^COPY .*\bdagster\.yaml \./$", before, re.M)


def yaml_of(name: str) -> dict:
    import yaml

    return yaml.safe_load((DEPLOY / name).read_text())


def test_the_image_has_a_writable_numba_cache_and_starts_the_code_server():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    env = dict(re.findall(r"\b([A-Z_]+)=(\S+)", dockerfile.split("ENV", 1)[1].split("WORKDIR", 1)[0]))
    assert env["NUMBA_CACHE_DIR"] == "/var/cache/numba" and env["REDUCTION_DEPLOYMENT"] == "production"
    assert re.search(r'chown -R reduction:reduction "\$NUMBA_CACHE_DIR"', dockerfile)
    assert "USER reduction" in dockerfile and '"/usr/bin/tini", "--"' in dockerfile
    for source in re.findall(r"^COPY (.+) \S+$", dockerfile, re.M):
        for path in source.split():
            assert (ROOT / path).exists(), path
    assert '"reduction_assets.orchestration.definitions", "-a", "defs"' in dockerfile
    assert env["DAGSTER_HOME"] == env["REDUCTION_HOME"] + "/dagster"


def commands_of_compose() -> dict[str, list[str]]:
    services = yaml_of("compose.yaml")["services"]
    return {name: service["command"] for name, service in services.items() if "command" in service}


def test_the_compose_file_runs_every_process_of_the_topology_from_existing_modules():
    import importlib

    commands = commands_of_compose()
    assert set(commands) == {"code-server", "daemon", "webserver", "worker"}
    assert commands["code-server"][:3] == ["dagster", "api", "grpc"]
    assert importlib.import_module("reduction_assets.orchestration.definitions").defs
    worker = commands["worker"]
    assert (
        worker[:3] == ["celery", "-A", "reduction_assets.orchestration.executors"]
        and "--pool=threads" in worker
    )
    for name in ("daemon", "webserver"):
        workspace = commands[name][commands[name].index("-w") + 1]
        assert workspace == "/opt/reduction/deploy/workspace.yaml"  # where the Dockerfile copies it
    assert {"postgres", "rabbitmq"} <= set(yaml_of("compose.yaml")["services"])
    assert (DEPLOY / "postgres-init.sh").stat().st_mode & 0o111


def test_the_compose_environment_gives_every_variable_dagster_yaml_and_the_workspace_read():
    compose = yaml_of("compose.yaml")
    environment = compose["x-reduction"]["environment"]
    wanted = set()
    for name in ("dagster.yaml", "workspace.yaml"):
        wanted |= set(re.findall(r"\{env: ([A-Z_]+)\}", (DEPLOY / name).read_text()))
    assert wanted <= set(environment), wanted - set(environment)
    assert set(environment) <= set(env_example()) | {"AWS_DEFAULT_REGION"}, set(environment) - set(
        env_example()
    )
    assert environment["REDUCTION_CATALOG_URL"].startswith("postgresql+psycopg2://")
    # Passwords come from the operator's env file, never from the compose file itself.
    for key, value in environment.items():
        if "PASSWORD" in key or "SECRET" in key or "URL" in key:
            assert "change-me" not in str(value) and not re.search(r":[^:@/${}]+@", str(value)), key


def test_the_helm_values_launch_runs_as_kubernetes_jobs_of_the_code_servers_image():
    import importlib

    from dagster_k8s import K8sRunLauncher

    values = yaml_of("helm/values.yaml")
    assert values["runLauncher"]["type"] == K8sRunLauncher.__name__
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    args = deployment["dagsterApiGrpcArgs"]
    module, attribute = args[args.index("-m") + 1], args[args.index("-a") + 1]
    assert callable(getattr(importlib.import_module(module), attribute))
    env = {item["name"]: item["value"] for item in deployment["env"]}
    assert set(env) <= set(env_example()), set(env) - set(env_example())
    assert env["REDUCTION_DEPLOYMENT"] == "production" and env["NUMBA_CACHE_DIR"]
    assert values["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    assert values["global"]["dagsterHome"] == env["REDUCTION_HOME"] + "/dagster"
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    mounts = {m["mountPath"] for m in launcher["volumeMounts"]}
    assert env["REDUCTION_HOME"] in mounts  # run pods see the products the code server sees
    limits = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    backfill = {t["key"]: t["limit"] for t in limits["tagConcurrencyLimits"]}["dagster/backfill"]
    assert backfill < limits["maxConcurrentRuns"]
    # Secrets only by reference: no password, key or credential-bearing URL in the values.
    text_of_values = (DEPLOY / "helm" / "values.yaml").read_text()
    assert not re.search(r"(?i)(password|secret_access_key)\s*:\s*\S", text_of_values)
    assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", text_of_values)
