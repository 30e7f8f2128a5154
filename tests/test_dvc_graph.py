"""The DVC graph: every param a stage lists exists, each stage has its module, metrics are uncached."""

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def load(name: str) -> dict:
    return yaml.safe_load((REPO / name).read_text())


def lookup(params: dict, dotted: str):
    node = params
    for key in dotted.split("."):
        assert isinstance(node, dict) and key in node, f"params.yaml has no '{dotted}'"
        node = node[key]
    return node


def test_every_stage_param_exists_and_every_section_is_used():
    dvc, params = load("dvc.yaml"), load("params.yaml")
    used_sections = set()
    for name, stage in dvc["stages"].items():
        for key in stage.get("params", []):
            assert isinstance(key, str), f"stage {name}: list individual keys, not {key!r}"
            lookup(params, key)
            used_sections.add(key.split(".")[0])
            assert "." in key, f"stage {name}: '{key}' depends on a whole section"
    assert used_sections == set(params), f"sections no stage reads: {set(params) - used_sections}"


def test_stage_name_module_and_section_agree():
    dvc, params = load("dvc.yaml"), load("params.yaml")
    for name, stage in dvc["stages"].items():
        assert (REPO / "stages" / f"{name}.py").is_file()
        assert f"python -m stages.{name} " in stage["cmd"] + " "
        assert f"stages/{name}.py" in stage["deps"]
        reads = (REPO / "stages" / f"{name}.py").read_text()
        if name in params:
            assert f'load_params("{name}"' in reads, f"stages/{name}.py does not read its section"


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
