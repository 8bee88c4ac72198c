"""Each registration setting is declared once (rso.settings, defaults from rso.options): the CLI options,
the worker protocol's arguments and the Slicer parameter node's fields are generated from those dataclasses,
with the same defaults, and no settings literal or positional settings call lies anywhere else."""

from __future__ import annotations

import ast
from dataclasses import fields
from pathlib import Path

import pytest

from rso import options
from rso.errors import InputError
from rso.settings import SETTINGS, EngineSettings, ISOSettings, PairInputs, RSOSettings, flag_of

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "RSORegistration"
REGISTRATION_CLIS = ("register.py", "batch.py", "demo.py", "review.py", "worker.py", "common.py")


def _actions(subcommand: str) -> dict:
    from rso.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._subparsers._group_actions if subcommand in a.choices)
    return {action.dest: action for action in sub.choices[subcommand]._actions}


PREFIXES = {EngineSettings: "", ISOSettings: "iso_", RSOSettings: "rso_"}


@pytest.mark.parametrize("settings", [EngineSettings, ISOSettings, RSOSettings])
def test_register_options_are_the_settings_fields_with_their_defaults(settings):
    actions = _actions("register")
    for f in fields(settings):
        action = actions[PREFIXES[settings] + f.name]
        assert flag_of(f) in action.option_strings, f.name
        assert action.default == f.default, f.name
        assert action.help.startswith(f.metadata["help"]), f.name
        if f.metadata["choices"]:
            assert tuple(action.choices) == tuple(f.metadata["choices"]), f.name


def test_batch_takes_the_same_settings_options():
    actions = _actions("batch")
    for settings, prefix in PREFIXES.items():
        assert all(actions[prefix + f.name].default == f.default for f in fields(settings)), settings.__name__


def test_the_protocols_arguments_are_the_settings_fields():
    from rso.service.protocol import COMMANDS, FILE_ARGUMENTS

    names = lambda settings: {f.name for f in fields(settings)}  # noqa: E731
    assert set(COMMANDS["iso"]) == names(ISOSettings)
    assert set(COMMANDS["rso"]) == names(RSOSettings) | {"box_ras", "box_lps"}
    assert set(COMMANDS["open"]) == names(EngineSettings) | names(PairInputs) | {"folder", "session_id"}
    assert set(PairInputs.FILES) <= set(FILE_ARGUMENTS) <= set(COMMANDS["open"])
    # One meaning per key: the network's loss and the native measure no longer share "similarity".
    assert "similarity" not in COMMANDS["open"] and "network_similarity" in COMMANDS["open"]


def test_the_protocol_carries_settings_whole():
    from rso.service.protocol import check_args

    for settings, command in ((ISOSettings(iterations=7), "iso"), (RSOSettings(min_gain=0.1), "rso")):
        args = settings.to_dict()
        extra = {"box_ras": [0, 0, 0, 1, 1, 1]} if command == "rso" else {}
        given = check_args(command, {**args, **extra})
        assert type(settings).from_dict({k: v for k, v in given.items() if k not in extra}) == settings
    engine = EngineSettings(channels=(4, 8), grid=(16, 32, 32), network_smoothness=0.5)
    assert EngineSettings.from_dict(check_args("open", engine.to_dict())) == engine


def test_settings_refuse_unknown_names_and_bad_values_in_one_line():
    with pytest.raises(InputError, match="unknown setting"):
        RSOSettings.from_dict({"step": 0.3})
    for bad in (
        {"mode": "fast"},
        {"min_gain": -1.0},
        {"iterations": 2.5},
        {"min_motion_left": 1.5},
        {"max_added_fold_share": -0.1},
    ):
        with pytest.raises(InputError) as error:
            RSOSettings(**bad)
        assert "\n" not in str(error.value)
    with pytest.raises(InputError, match="pre-alignment"):
        PairInputs(fixed="f", moving="m", initial_transform="t.tfm", prealign="rigid")


def test_the_parameter_node_takes_its_defaults_and_choices_from_the_settings():
    from RSORegistrationLib.parameters import SETTING_FIELDS, RunParameters, setting_choices

    params = RunParameters()
    for name, (settings, field_name) in SETTING_FIELDS.items():
        assert getattr(params, name) == getattr(settings(), field_name), name
        meta = next(f for f in fields(settings) if f.name == field_name).metadata
        assert setting_choices(name) == meta["choices"], name
    assert params.rsoIterations == options.DEFAULT_NATIVE_ITERATIONS  # the default mode's own
    # The module's parameterNodeWrapper class reads the same defaults (it is Qt-side: parsed, not run).
    tree = ast.parse((PACKAGE / "RSORegistration.py").read_text())
    wrapper = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name.endswith("ParameterNode"))
    checked = 0
    for statement in wrapper.body:
        if isinstance(statement, ast.AnnAssign) and statement.target.id in SETTING_FIELDS:
            settings, field_name = SETTING_FIELDS[statement.target.id]
            assert ast.unparse(statement.value) == f"default_of({settings.__name__}, '{field_name}')"
            checked += 1
    assert checked == len(SETTING_FIELDS)


def test_the_scan_rule_checkbox_reaches_the_rso_step():
    """Slicer's *Scan rule* box is RSOSettings.scan_rule: unticked, the RSO request turns the rule off."""
    from RSORegistrationLib.parameters import RunParameters, settings_arguments

    assert settings_arguments(RunParameters(), RSOSettings)["scan_rule"] is True
    arguments = settings_arguments(RunParameters(rsoScanRule=False), RSOSettings)
    assert arguments["scan_rule"] is False
    assert RSOSettings(**arguments).scan_rule is False


def _settings_defaults() -> list[ast.expr]:
    tree = ast.parse((PACKAGE / "rso" / "settings.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setting"]
    return [call.args[0] for call in calls]


def test_every_default_is_a_name_from_options():
    defaults = _settings_defaults()
    assert len(defaults) == sum(len(fields(s)) for s in SETTINGS)
    for default in defaults:
        is_none = isinstance(default, ast.Constant) and default.value is None
        assert is_none or (isinstance(default, ast.Name) and hasattr(options, default.id)), ast.unparse(
            default
        )


def _python_files():
    for folder in (PACKAGE, ROOT / "scripts", ROOT / "Testing"):
        yield from folder.rglob("*.py")


def test_no_settings_are_given_positionally_anywhere():
    names = {s.__name__ for s in SETTINGS} | {"NativeSettings"}
    offenders = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") in names and node.args:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders


def test_no_registration_cli_declares_a_default_of_its_own():
    offenders = []
    for name in REGISTRATION_CLIS:
        path = PACKAGE / "rso" / "cli" / name
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
                for keyword in node.keywords:
                    value = keyword.value
                    literal = isinstance(value, ast.Constant) and isinstance(value.value, (int, float))
                    if keyword.arg == "default" and literal and not isinstance(value.value, bool):
                        offenders.append(f"{name}:{node.lineno}")
    assert not offenders, offenders
