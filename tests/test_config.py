"""Tests of the typed config: inheritance, overrides, error messages, round trip."""

from __future__ import annotations

import copy
import pickle
import textwrap
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from vireid.config import (
    Config,
    ConfigError,
    MethodConfig,
    StageConfig,
    cfg_to_yaml,
    config_from_dict,
    dump_config,
    get_method_schema,
    load_config,
    parse_override,
    register_method_schema,
    resolve_data_root,
)

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "examples" / "tiny_synthetic.yaml"

MINIMAL = """\
data: {name: sysu}
method: {name: plain}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_of(func, *args, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        func(*args, **kwargs)
    return info.value


class _UnitTestMethod(MethodConfig):
    """A method schema as a method module would register it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    margin: float = Field(0.3, gt=0)
    momentum: float = 0.2
    branches: list[Literal["sii", "lii"]] = ["sii", "lii"]


register_method_schema("unit_test_method", _UnitTestMethod)


# --------------------------------------------------------------------------- shipped files


def test_example_config_loads_with_inherited_defaults():
    cfg = load_config(TINY)
    assert cfg.name == "tiny_synthetic"
    assert cfg.data.name == "sysu"  # from _base_/sysu.yaml
    assert cfg.data.image_size == (64, 32)  # example overrides image.yaml/default.yaml
    assert cfg.data.augment.pad == 10  # the schema default
    assert list(cfg.train.stages) == ["prompt", "image"]  # YAML order is stage order
    assert cfg.stage("image").milestones == [2]
    assert cfg.batch_composition("image") == (4, 2)
    assert "_base_/sysu.yaml, line" in cfg.source_of("data.name")  # set in a base
    assert "tiny_synthetic.yaml, line" in cfg.source_of("train.stages.image.milestones")


@pytest.mark.parametrize("name", ["sysu", "regdb", "llcm", "vcm", "bupt"])
def test_dataset_base_files_validate(tmp_path, name):
    base = REPO / "configs" / "_base_" / f"{name}.yaml"
    child = write(tmp_path, "run.yaml", f"_base_: {base}\nmethod: {{name: plain}}\n")
    cfg = load_config(child)
    assert cfg.data.name == name
    assert cfg.data.is_video == (name in ("vcm", "bupt"))
    assert cfg.data.image_size == (288, 144)


# --------------------------------------------------------------------------- inheritance


def test_multilevel_inheritance_and_deep_merge(tmp_path):
    write(
        tmp_path,
        "a.yaml",
        """\
        seed: 1
        data: {name: sysu, workers: 3, image_size: [288, 144], options: {mode: all, trials: 10}}
        method: {name: plain}
        """,
    )
    write(
        tmp_path,
        "sub/b.yaml",
        """\
        _base_: ../a.yaml
        seed: 2
        data: {options: {mode: indoor}, image_size: [128, 64]}
        """,
    )
    child = write(
        tmp_path,
        "sub/deeper/c.yaml",
        """\
        _base_: ../b.yaml
        data: {workers: 0}
        """,
    )
    cfg = load_config(child)
    assert cfg.seed == 2  # scalar replaced by b
    assert cfg.data.workers == 0  # replaced by c
    assert cfg.data.options == {"mode": "indoor", "trials": 10}  # dicts merge at every depth
    assert cfg.data.image_size == (128, 64)  # lists replace
    assert cfg.name == "c"  # run named after the file when no file sets a name
    assert cfg.source_of("data.options.trials").endswith("a.yaml, line 2")
    assert "b.yaml, line 3" in cfg.source_of("data.options.mode")


def test_list_of_bases_merge_left_to_right(tmp_path):
    write(tmp_path, "one.yaml", "seed: 1\ndata: {name: sysu, workers: 1}\nmethod: {name: plain}\n")
    write(tmp_path, "two.yaml", "seed: 2\ndata: {pin_memory: false}\n")
    child = write(tmp_path, "child.yaml", "_base_: [one.yaml, two.yaml]\noutput_dir: out\n")
    cfg = load_config(child)
    assert cfg.seed == 2
    assert (cfg.data.workers, cfg.data.pin_memory, cfg.output_dir) == (1, False, "out")
    reverse = write(tmp_path, "reverse.yaml", "_base_: [two.yaml, one.yaml]\n")
    assert load_config(reverse).seed == 1


def test_diamond_inheritance_is_not_a_cycle(tmp_path):
    write(tmp_path, "root.yaml", MINIMAL)
    write(tmp_path, "left.yaml", "_base_: root.yaml\nseed: 3\n")
    write(tmp_path, "right.yaml", "_base_: root.yaml\ndata: {workers: 2}\n")
    cfg = load_config(write(tmp_path, "top.yaml", "_base_: [left.yaml, right.yaml]\n"))
    # right.yaml re-applies root.yaml, which sets no seed, so left's seed survives
    assert (cfg.seed, cfg.data.workers) == (3, 2)


def test_delete_marker_replaces_instead_of_merging(tmp_path):
    write(
        tmp_path,
        "base.yaml",
        MINIMAL
        + "train:\n  stages:\n    warm: {epochs: 5, lr: 0.1, lr_multipliers: {head: 2, prompt: 5}}\n",
    )
    child = write(
        tmp_path,
        "child.yaml",
        """\
        _base_: base.yaml
        train:
          stages:
            _delete_: true
            main: {epochs: 4, lr: 0.01, lr_multipliers: {head: 3}}
        """,
    )
    cfg = load_config(child)
    assert list(cfg.train.stages) == ["main"]
    merged = write(
        tmp_path,
        "merged.yaml",
        "_base_: base.yaml\ntrain: {stages: {warm: {lr_multipliers: {head: 3}}}}\n",
    )
    assert load_config(merged).stage("warm").lr_multipliers == {"head": 3.0, "prompt": 5.0}


def test_yaml_anchors_share_stage_settings(tmp_path):
    path = write(
        tmp_path,
        "anchors.yaml",
        MINIMAL
        + textwrap.dedent(
            """\
            train:
              stages:
                first: &common {epochs: 6, lr: 3.0e-4, scheduler: cosine, min_lr: 1e-6}
                second: {<<: *common, epochs: 8}
            """
        ),
    )
    cfg = load_config(path)
    assert cfg.stage("second").epochs == 8
    assert cfg.stage("second").min_lr == pytest.approx(1e-6)
    assert cfg.stage("second").scheduler == "cosine"


def test_cycle_is_reported_with_the_chain(tmp_path):
    write(tmp_path, "x.yaml", "_base_: y.yaml\n")
    write(tmp_path, "y.yaml", "_base_: x.yaml\n")
    err = error_of(load_config, tmp_path / "x.yaml")
    assert "cycle" in str(err)
    assert "x.yaml -> " in str(err) and "y.yaml -> " in str(err)
    write(tmp_path, "self.yaml", "_base_: self.yaml\n")
    assert "cycle" in str(error_of(load_config, tmp_path / "self.yaml"))


def test_missing_base_names_both_files(tmp_path):
    child = write(tmp_path, "child.yaml", "_base_: nowhere/base.yaml\n")
    message = str(error_of(load_config, child))
    assert "child.yaml" in message and "nowhere/base.yaml" in message
    assert "not found" in message


def test_bad_base_value_and_missing_file(tmp_path):
    child = write(tmp_path, "child.yaml", "_base_: {a: 1}\n")
    assert "_base_ must be" in str(error_of(load_config, child))
    assert "not found" in str(error_of(load_config, tmp_path / "absent.yaml"))


def test_invalid_yaml_and_non_mapping_name_the_file(tmp_path):
    broken = write(tmp_path, "broken.yaml", "data: {name: sysu\nmethod: x\n")
    message = str(error_of(load_config, broken))
    assert "broken.yaml" in message and "not valid YAML" in message
    listing = write(tmp_path, "list.yaml", "- a\n- b\n")
    assert "must be a mapping" in str(error_of(load_config, listing))


# --------------------------------------------------------------------------- overrides


def test_overrides_nested_typed_and_lists(tmp_path):
    cfg = load_config(
        TINY,
        [
            "train.stages.image.lr=5e-6",
            "data.root=/datasets/sysu",
            "data.options.trial=3",
            "data.options.modes=[all, indoor]",
            "train.stages.image.milestones=[1,2]",
            "data.image_size.0=96",
            "train.amp=true",
            "train.clip_grad_norm=null",
            "eval.rerank.enabled=yes",
            "train.stages.extra.epochs=1",
            "train.stages.extra.lr=1e-3",
        ],
    )
    stage = cfg.stage("image")
    assert isinstance(stage.lr, float) and stage.lr == pytest.approx(5e-6)
    assert cfg.data.root == "/datasets/sysu"
    assert cfg.data.options == {"trial": 3, "modes": ["all", "indoor"]}
    assert stage.milestones == [1, 2]
    assert cfg.data.image_size == (96, 32)
    assert cfg.train.amp is True and cfg.eval.rerank.enabled is True
    assert list(cfg.train.stages) == ["prompt", "image", "extra"]
    assert cfg.source_of("data.image_size.0") == "override 'data.image_size.0=96'"
    assert cfg.source_of("data.image_size.1").startswith(str(Path("configs/examples")))


def test_override_replaces_mapping_and_drops_old_sources(tmp_path):
    cfg = load_config(TINY, ["train.log={every_steps: 7}"])
    assert cfg.train.log.every_steps == 7
    assert (
        cfg.train.log.progress is True
    )  # replaced mapping -> schema default, not the file's false
    assert cfg.source_of("train.log.progress") == "override 'train.log={every_steps: 7}'"


def test_parse_override_values():
    assert parse_override("a.b=5e-6") == (("a", "b"), 5e-6)
    assert parse_override("a=1e5") == (("a",), 1e5)
    assert parse_override("a=[30, 50]") == (("a",), [30, 50])
    assert parse_override("a=") == (("a",), None)
    assert parse_override("a=x=y") == (("a",), "x=y")
    assert parse_override("a='007'") == (("a",), "007")


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("train.lr", "expected key=value"),
        ("=3", "malformed key"),
        ("train..lr=3", "malformed key"),
        ("_base_=x.yaml", "only be used in config files"),
        ("data.image_size.5=3", "out of range"),
        ("data.image_size.h=3", "expected an index"),
        ("data.name.x=1", "has no key 'x'"),
        ("data.root=[unclosed", "not valid YAML"),
    ],
)
def test_bad_overrides_name_the_override(override, fragment):
    message = str(error_of(load_config, TINY, [override]))
    assert fragment in message
    assert repr(override) in message


def test_override_of_unknown_key_names_key_and_override():
    err = error_of(load_config, TINY, ["train.stages.image.learning_rate=0.1"])
    assert len(err.issues) == 1
    issue = err.issues[0]
    assert issue.key == "train.stages.image.learning_rate"
    assert issue.source == "override 'train.stages.image.learning_rate=0.1'"
    assert "unknown key" in issue.message


# --------------------------------------------------------------------------- errors


def test_unknown_key_in_file_names_key_file_and_line(tmp_path):
    path = write(tmp_path, "run.yaml", MINIMAL + "train:\n  ampp: true\n")
    err = error_of(load_config, path)
    (issue,) = err.issues
    assert issue.key == "train.ampp"
    assert issue.source.endswith("run.yaml, line 4")
    assert "did you mean 'amp'" in issue.message
    assert "train.ampp" in str(err) and "run.yaml" in str(err)
    assert "Traceback" not in str(err) and "pydantic" not in str(err)


def test_unknown_key_in_base_file_names_the_base(tmp_path):
    write(tmp_path, "bases/base.yaml", "data:\n  name: sysu\n  wrokers: 2\n")
    child = write(tmp_path, "child.yaml", "_base_: bases/base.yaml\nmethod: {name: plain}\n")
    (issue,) = error_of(load_config, child).issues
    assert issue.key == "data.wrokers"
    assert issue.source.endswith("base.yaml, line 3")
    assert "child.yaml" not in issue.source


@pytest.mark.parametrize(
    ("yaml_text", "key", "expected"),
    [
        ("train: {stages: {main: {epochs: ten, lr: 0.1}}}", "train.stages.main.epochs", "integer"),
        ("train: {stages: {main: {epochs: 2, lr: fast}}}", "train.stages.main.lr", "number"),
        ("train: {amp: maybe}", "train.amp", "true or false"),
        (
            "train: {stages: {main: {epochs: 2, lr: 0.1, optimizer: lion}}}",
            "train.stages.main.optimizer",
            "'adam', 'adamw' or 'sgd'",
        ),
        ("data: {image_size: 288}", "data.image_size", "list"),
        ("data: {image_size: [288, 144, 3]}", "data.image_size", "2 items"),
        ("data: {root: 5}", "data.root", "string"),
        ("eval: []", "eval", "mapping"),
        (
            "data: {identities_per_batch: 0}",
            "data.identities_per_batch",
            "greater than or equal to 1",
        ),
        ("data: {video: {test_sampling: dense2}}", "data.video.test_sampling", "'dense'"),
        ("name: a/b", "name", "plain folder name"),
    ],
)
def test_wrong_type_names_key_file_and_expectation(tmp_path, yaml_text, key, expected):
    import yaml  # merged into MINIMAL: a key written twice is an error of its own

    tree, extra = yaml.safe_load(MINIMAL), yaml.safe_load(yaml_text)
    for section, value in extra.items():
        both = isinstance(tree.get(section), dict) and isinstance(value, dict)
        tree[section] = {**tree[section], **value} if both else value
    path = write(tmp_path, "bad.yaml", yaml.safe_dump(tree))
    err = error_of(load_config, path)
    matching = [issue for issue in err.issues if issue.key == key]
    assert matching, str(err)
    assert expected in matching[0].message
    assert "bad.yaml, line" in matching[0].source


def test_missing_required_section_and_all_problems_listed(tmp_path):
    path = write(tmp_path, "two.yaml", "method: {name: plain}\ntrain: {amp: 3, device: tpu}\n")
    err = error_of(load_config, path)
    keys = {issue.key for issue in err.issues}
    assert keys == {"data", "train.amp", "train.device"}
    assert "3 problems" in str(err)


@pytest.mark.parametrize(
    ("stage", "key", "fragment"),
    [
        ("{epochs: 5, lr: 0.1, warmup_epochs: 6}", "warmup_epochs", "<= epochs (5)"),
        ("{epochs: 60, lr: 0.1, milestones: [50, 30]}", "milestones", "strictly increasing"),
        ("{epochs: 60, lr: 0.1, milestones: [30, 60]}", "milestones", "in 1..59"),
        (
            "{epochs: 6, lr: 0.1, warmup_factor: 0.1, warmup_start_lr: 0.01}",
            "warmup_start_lr",
            "not both",
        ),
        ("{epochs: 6, lr: 0.1, scheduler: cosine, min_lr: 0.2}", "min_lr", "<= lr"),
        ("{epochs: 6, lr: 0.0}", "lr", "greater than 0"),
        (
            "{epochs: 6, lr: 0.1, lr_multipliers: {prompts: -1}}",
            "lr_multipliers.prompts",
            "greater than 0",
        ),
        ("{epochs: 6, lr: 0.1, betas: [0.9, 1.0]}", "betas", "beta2"),
    ],
)
def test_cross_field_constraints_name_the_field(tmp_path, stage, key, fragment):
    path = write(tmp_path, "stage.yaml", MINIMAL + f"train:\n  stages:\n    main: {stage}\n")
    (issue,) = error_of(load_config, path).issues
    assert issue.key == f"train.stages.main.{key}"
    assert fragment in issue.message
    assert "stage.yaml, line 5" in issue.source


def test_stage_warmup_start_and_batch_override():
    stage = StageConfig(epochs=10, lr=5e-6, warmup_start_lr=5e-7)
    assert stage.warmup_start == pytest.approx(5e-7)
    assert StageConfig(epochs=10, lr=3e-4, warmup_factor=0.5).warmup_start == pytest.approx(1.5e-4)
    assert StageConfig(epochs=10, lr=1.0).warmup_start == pytest.approx(0.01)
    cfg = load_config(TINY, ["train.stages.image.instances_per_identity=3"])
    assert cfg.batch_composition("image") == (4, 3)
    assert cfg.batch_composition("prompt") == (4, 2)


def test_cfg_error_helper_names_source_for_later_checks():
    cfg = load_config(TINY)
    err = cfg.error("data.instances_per_identity", "only 1 image for identity 7")
    assert "data.instances_per_identity: only 1 image for identity 7" in str(err)
    assert "tiny_synthetic.yaml, line" in str(err)
    missing = error_of(cfg.stage, "hse")
    assert "train.stages" in str(missing) and "'hse'" in str(missing)


# --------------------------------------------------------------------------- method schemas


def test_registered_method_schema_validates_method_section(tmp_path):
    path = write(
        tmp_path,
        "m.yaml",
        "data: {name: vcm}\nmethod:\n  name: unit_test_method\n  margin: 0.5\n  branches: [sii]\n",
    )
    cfg = load_config(path)
    assert isinstance(cfg.method, _UnitTestMethod)
    assert (cfg.method.margin, cfg.method.branches, cfg.method.momentum) == (0.5, ["sii"], 0.2)
    assert isinstance(cfg, Config)

    err = error_of(load_config, path, ["method.mommentum=0.1"])
    (issue,) = err.issues
    assert issue.key == "method.mommentum"
    assert "did you mean 'momentum'" in issue.message
    assert issue.source == "override 'method.mommentum=0.1'"

    bad = write(
        tmp_path, "bad.yaml", "data: {name: vcm}\nmethod: {name: unit_test_method, margin: -1}\n"
    )
    (issue,) = error_of(load_config, bad).issues
    assert issue.key == "method.margin" and "bad.yaml, line 2" in issue.source


def test_unregistered_method_accepts_only_name_and_params(tmp_path):
    ok = write(tmp_path, "ok.yaml", "data: {name: sysu}\nmethod: {name: someday, params: {k: 1}}\n")
    assert load_config(ok).method.params == {"k": 1}
    bad = write(tmp_path, "bad.yaml", "data: {name: sysu}\nmethod: {name: someday, margin: 1}\n")
    (issue,) = error_of(load_config, bad).issues
    assert issue.key == "method.margin"
    assert "no registered schema" in issue.message and "unit_test_method" in issue.message


def test_register_method_schema_rules():
    class Loose(BaseModel):
        name: str

    with pytest.raises(TypeError, match="extra='forbid'"):
        register_method_schema("loose", Loose)

    class Nameless(BaseModel):
        model_config = ConfigDict(extra="forbid")

    with pytest.raises(TypeError, match="'name' field"):
        register_method_schema("nameless", Nameless)

    class Other(MethodConfig):
        pass

    register_method_schema("unit_test_method", _UnitTestMethod)  # same class: no-op
    with pytest.raises(ValueError, match="already has schema"):
        register_method_schema("unit_test_method", Other)
    assert get_method_schema("unit_test_method") is _UnitTestMethod


# --------------------------------------------------------------------------- round trip


def test_dump_and_load_round_trip(tmp_path):
    cfg = load_config(
        TINY, ["train.stages.image.lr=5e-6", "data.options.trial=2", "train.amp=true"]
    )
    target = dump_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(target)
    assert again == cfg
    assert again.stage("image").lr == 5e-6
    assert cfg_to_yaml(again) == cfg_to_yaml(cfg)
    assert "_base_" not in target.read_text()
    assert config_from_dict(cfg.to_dict()) == cfg
    assert again != load_config(TINY)


def test_round_trip_with_method_schema(tmp_path):
    path = write(
        tmp_path, "m.yaml", "data: {name: bupt}\nmethod: {name: unit_test_method, margin: 0.7}\n"
    )
    cfg = load_config(path)
    again = load_config(dump_config(cfg, tmp_path / "dumped.yaml"))
    assert again == cfg and isinstance(again.method, _UnitTestMethod)


def test_pickle_keeps_value_type_and_sources(tmp_path):
    path = write(
        tmp_path, "m.yaml", "data: {name: bupt}\nmethod: {name: unit_test_method, margin: 0.7}\n"
    )
    for cfg in (load_config(path), load_config(TINY)):
        again = pickle.loads(pickle.dumps(cfg))
        assert again == cfg and type(again) is type(cfg)
        assert again.source_of("data.name") == cfg.source_of("data.name")
        assert copy.deepcopy(cfg) == cfg


def test_config_from_dict_errors_name_the_source():
    err = error_of(
        config_from_dict,
        {"data": {"name": "sysu"}, "method": {"name": "x"}, "sed": 1},
        source="checkpoint.pt",
    )
    (issue,) = err.issues
    assert (issue.key, issue.source) == ("sed", "checkpoint.pt")
    assert "did you mean 'seed'" in issue.message
    assert "_base_" in str(error_of(config_from_dict, {"_base_": "a.yaml"}))


def test_floats_in_exponent_notation_load_as_numbers(tmp_path):
    path = write(
        tmp_path, "f.yaml", MINIMAL + "train: {stages: {s: {epochs: 2, lr: 5e-6, min_lr: 1E-7}}}\n"
    )
    stage = load_config(path).stage("s")
    assert stage.lr == 5e-6 and stage.min_lr == 1e-7


# --------------------------------------------------------------------------- data root


def test_data_root_resolution(tmp_path):
    cfg = config_from_dict({"data": {"name": "vcm"}, "method": {"name": "x"}})
    env = {"VIREID_DATA": str(tmp_path)}
    assert resolve_data_root(cfg.data, env) == tmp_path / "HITSZ-VCM"
    sysu = config_from_dict({"data": {"name": "sysu"}, "method": {"name": "x"}})
    assert resolve_data_root(sysu.data, env) == tmp_path / "SYSU-MM01"
    explicit = config_from_dict(
        {"data": {"name": "sysu", "root": "~/somewhere"}, "method": {"name": "x"}}
    )
    assert resolve_data_root(explicit.data, env) == Path.home() / "somewhere"
    message = str(error_of(resolve_data_root, cfg.data, {}))
    assert "data.root" in message and "VIREID_DATA" in message and "HITSZ-VCM" in message


def test_data_root_uses_process_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VIREID_DATA", str(tmp_path))
    cfg = config_from_dict({"data": {"name": "bupt"}, "method": {"name": "x"}})
    assert resolve_data_root(cfg.data) == tmp_path / "BUPTCampus"


def test_assignment_is_validated():
    cfg = load_config(TINY)
    with pytest.raises(ValueError):
        cfg.train.amp = "sometimes"
    cfg.train.amp = True
    assert cfg.train.amp is True


@pytest.mark.parametrize("where", ["file", "override"])
@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_non_finite_numbers_are_refused_naming_key_and_source(tmp_path, where, value):
    text = MINIMAL + "train: {stages: {main: {epochs: 1, lr: 0.1}}}\n"
    if where == "file":
        text = text.replace("lr: 0.1", f"lr: {value}")
    path = write(tmp_path, "a.yaml", text)
    overrides = [f"train.stages.main.lr={value}"] if where == "override" else []
    message = str(error_of(load_config, path, overrides))
    assert "train.stages.main.lr: must be a finite number" in message
    assert ("override" in message) if where == "override" else ("a.yaml, line 3" in message)


def test_non_finite_numbers_in_a_stored_config_are_refused():
    data = load_config(TINY).to_dict()
    data["method"]["id_loss_weight"] = float("nan")
    assert "method.id_loss_weight: must be a finite number" in str(
        error_of(config_from_dict, data, "checkpoint x.pt"))


def test_duplicate_keys_are_refused_with_both_lines(tmp_path):
    path = write(tmp_path, "dup.yaml", """\
        data: {name: sysu}
        method:
          name: plain
        train:
          amp: true
          amp: false
        """)
    message = str(error_of(load_config, path))
    assert "dup.yaml, line 6: duplicate key 'train.amp' (first set on line 5)" in message
    assert "line 2: duplicate key 'data'" in str(error_of(load_config, write(
        tmp_path, "top.yaml", "data: {name: sysu}\ndata: {name: regdb}\nmethod: {name: plain}\n")))
    anchors = write(tmp_path, "merge.yaml", """\
        base: &b {amp: true}
        data: {name: sysu}
        method: {name: plain}
        train: {<<: *b, compile: false}
        """)
    with pytest.raises(ConfigError, match="unknown key"):  # merge keys still work; 'base' is unknown
        load_config(anchors)


def test_a_folder_given_as_config_says_so(tmp_path):
    message = str(error_of(load_config, tmp_path))
    assert "is a folder; expected a config file" in message and "not found" not in message


def test_loading_a_config_imports_neither_torch_nor_a_method():
    """The method schemas are torch-free: `vireid config` stays instant (timing itself is
    benchmarks/cli_speed.py)."""
    import subprocess
    import sys

    code = ("import sys; from vireid.config import load_config, registered_method_schemas; "
            f"cfg = load_config({str(REPO / 'configs/vcm/xreid_vitb16.yaml')!r}); "
            "assert cfg.method.name == 'xreid' and len(registered_method_schemas()) >= 4; "
            "heavy = [m for m in ('torch', 'open_clip', 'vireid.methods') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
