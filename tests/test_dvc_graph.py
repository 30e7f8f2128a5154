"""The DVC graph: each stage has its module and reads params through the typed config; metrics are
uncached; params are numbers where they should be; no param name DVC's run cache ignores."""

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def load(name: str) -> dict:
    return yaml.safe_load((REPO / name).read_text())


def stages() -> dict[str, dict]:
    """Stage name -> body (the `do` template of a foreach stage)."""
    return {name: stage.get("do", stage) for name, stage in load("dvc.yaml")["stages"].items()}


def test_stage_name_module_and_section_agree():
    params = load("params.yaml")
    for name, stage in stages().items():
        module = REPO / "stages" / f"{name}.py"
        assert module.is_file()
        assert f"python -m stages.{name} " in stage["cmd"] + " "
        assert f"stages/{name}.py" in stage["deps"]
        assert "load_config(" in module.read_text(), f"stages/{name}.py does not read the typed config"
        if name in params:
            assert any(p.startswith(f"{name}.") for p in stage.get("params", [])), (
                f"{name} lists no own params"
            )


def test_per_run_stages_iterate_over_folds_runs():
    dvc = load("dvc.yaml")["stages"]
    for name in ("finetune", "features", "train"):
        assert dvc[name]["foreach"] == "${folds.runs}"
        assert "--run ${item}" in dvc[name]["do"]["cmd"]


def test_metrics_are_plain_uncached_outputs():
    evaluate = load("dvc.yaml")["stages"]["evaluate"]
    for entry in evaluate["metrics"] + evaluate["plots"]:
        ((path, options),) = entry.items()
        assert options == {"cache": False}, path


def test_floats_in_params_are_numbers_not_strings():
    def walk(node, where):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for value in node:
                walk(value, where)
        elif isinstance(node, str):
            try:
                float(node)
            except ValueError:
                return
            raise AssertionError(f"params.yaml{where} = '{node}' is a string (write 3.0e-4, not 3e-4)")

    walk(load("params.yaml"), "")


def test_no_param_is_named_like_a_key_dvc_leaves_out_of_its_run_cache():
    # dvc.stage.cache hashes the lock entry with exclude=["size", "nfiles"] at every depth, so a param
    # with one of these names would not invalidate the run cache and a stale output would come back.
    def keys(node):
        if isinstance(node, dict):
            for key, value in node.items():
                yield key
                yield from keys(value)

    assert not {"size", "nfiles"} & set(keys(load("params.yaml")))


def test_paths_from_params_are_quoted_in_commands():
    """A data root with a space ("/data/my corpus") must reach the stage as one argument."""
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    commands = [body.get("cmd") or body["do"]["cmd"] for body in dvc["stages"].values()]
    uses = [cmd for cmd in commands if "${data.root}" in cmd]
    assert uses, "no stage reads data.root"
    for cmd in uses:
        assert cmd.count("${data.root}") == cmd.count('"${data.root}"'), cmd
