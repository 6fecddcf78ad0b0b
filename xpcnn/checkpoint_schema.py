"""The checkpoint header's schema: every field xpcnn reads, checked before anything is built from it.

A checkpoint's JSON header (:mod:`xpcnn.checkpoint`) is data from a file, so it may be of any shape.
:func:`validate_header` checks the keys xpcnn knows (``model_config``, ``model_dtype``, ``optimizer``, ``trainer``,
``schedule``, ``history``, ``dataset``, ``classes``, ``normalization``, ``training``, ...) and ignores unknown
top-level keys (a newer xpcnn may add some); :func:`validate_arrays` checks the arrays' dtypes and the optimizer
slots' shapes. Every problem is one :class:`CheckpointError` naming the file and the field::

    runs/a/last.npz: header field model_config.layers[2].kernel_size: expected a positive int or a pair of
    positive ints, got 'x'

A layer's keywords are its constructor's (``inspect.signature``), so a new layer keyword is known here at once;
the checks of their values are the table :data:`LAYER_KEYWORDS`.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xpcnn.data.augment import parse_policy
from xpcnn.errors import CheckpointError
from xpcnn.layers import LAYER_TYPES
from xpcnn.optim import SGD, Adam, AdamW
from xpcnn.resources import exceeds_memory, format_bytes


class _Invalid(Exception):
    """One problem at ``field`` (``trainer.epoch``); :func:`validate_header` adds the file name."""

    def __init__(self, field: str, problem: str,
                 advice: str = "the file was not written by this xpcnn, or was changed since") -> None:
        super().__init__(field, problem)
        self.field, self.problem, self.advice = field, problem, advice


def _shown(value: Any) -> str:
    text = repr(value)
    kind = {dict: "an object ", list: "a list "}.get(type(value), "")
    return kind + (text if len(text) <= 60 else text[:57] + "...")


@dataclass(frozen=True)
class Rule:
    """A check of one JSON value: ``expected`` says what it must be (for the message), ``test`` decides."""

    expected: str
    test: Callable[[Any], bool]

    def __call__(self, value: Any, field: str) -> None:
        if not self.test(value):
            raise _Invalid(field, f"expected {self.expected}, got {_shown(value)}")


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite(v: Any) -> bool:
    return _number(v) and math.isfinite(v)


def _normalization(mean: Any, std: Any) -> bool:
    """Whether ``[mean, std]`` is a checkpoint's normalization: each entry a finite number or a non-empty list of
    them (one per channel), every std > 0, per-channel lists of one length."""
    means, stds = (v if isinstance(v, list) else [v] for v in (mean, std))
    lengths = {len(v) for v in (mean, std) if isinstance(v, list)}
    return (bool(means) and bool(stds) and len(lengths) <= 1 and all(map(_finite, means))
            and all(_finite(s) and s > 0 for s in stds))


def _pair_of(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: test(v) or (isinstance(v, list) and len(v) == 2 and all(map(test, v)))


def optional(rule: Rule) -> Rule:
    """``rule``, or JSON null."""
    return Rule(f"{rule.expected} or null", lambda v: v is None or rule.test(v))


STRING = Rule("a string", lambda v: isinstance(v, str))
BOOL = Rule("true or false", lambda v: isinstance(v, bool))
INT = Rule("an int", _int)
POSITIVE_INT = Rule("a positive int", lambda v: _int(v) and v > 0)
NON_NEGATIVE_INT = Rule("a non-negative int", lambda v: _int(v) and v >= 0)
NUMBER = Rule("a number", _number)
FINITE = Rule("a finite number", _finite)
POSITIVE = Rule("a finite number > 0", lambda v: _finite(v) and v > 0)
NON_NEGATIVE = Rule("a finite number >= 0", lambda v: _finite(v) and v >= 0)
FRACTION = Rule("a number in [0, 1)", lambda v: _finite(v) and 0 <= v < 1)
UNIT = Rule("a number in [0, 1]", lambda v: _finite(v) and 0 <= v <= 1)
SIZE = Rule("a positive int or a pair of positive ints", _pair_of(lambda v: _int(v) and v > 0))
POOL_PADDING = Rule("a non-negative int or a pair of them", _pair_of(lambda v: _int(v) and v >= 0))
CONV_PADDING = Rule("a non-negative int, a pair of them, 'same' or 'valid'",
                    lambda v: v in ("same", "valid") or POOL_PADDING.test(v))
SEED = Rule("an int or a list of ints", lambda v: _int(v) or (isinstance(v, list) and all(map(_int, v))))
NORMALIZATION = Rule("a [mean, std] pair, each a finite number or a list of one per channel, std > 0",
                     lambda v: isinstance(v, list) and len(v) == 2 and _normalization(*v))
OBJECT = Rule("a JSON object", lambda v: isinstance(v, dict))
CHANNELS = Rule("1 or 3", lambda v: _int(v) and v in (1, 3))
OPEN_FRACTION = Rule("a number in (0, 1)", lambda v: _finite(v) and 0 < v < 1)
IMAGE_SHAPE = Rule("a [channels, height, width] list of positive ints",
                   lambda v: isinstance(v, list) and len(v) == 3 and all(_int(d) and d > 0 for d in v))
LIST = Rule("a list", lambda v: isinstance(v, list))


def one_of(*values: Any) -> Rule:
    return Rule("one of " + ", ".join(map(repr, values)), lambda v: isinstance(v, str) and v in values)


#: The check of each layer keyword's value, by keyword (``(type, keyword)`` where a layer differs).
LAYER_KEYWORDS: dict[Any, Rule] = {
    "in_channels": POSITIVE_INT, "out_channels": POSITIVE_INT, "in_features": POSITIVE_INT,
    "out_features": POSITIVE_INT, "num_features": POSITIVE_INT, "kernel_size": SIZE, "stride": SIZE,
    "dilation": SIZE, "padding": POOL_PADDING, ("Conv2D", "padding"): CONV_PADDING, "bias": BOOL, "seed": SEED,
    "lowering": STRING, "p": FRACTION, "eps": POSITIVE, "momentum": UNIT, "negative_slope": FINITE,
    "approximate": one_of("none", "tanh"),
}

#: Layer keywords whose value is a list of nested layer specs (a residual layer's paths), each checked as a layer.
NESTED_KEYWORDS = ("block", "shortcut")

#: The check of each optimizer hyper-parameter, by name.
HYPERPARAMETERS: dict[str, Rule] = {
    "lr": NON_NEGATIVE, "momentum": NON_NEGATIVE, "nesterov": BOOL, "weight_decay": NON_NEGATIVE, "eps": POSITIVE,
    "betas": Rule("a pair of numbers in [0, 1)",
                  lambda v: isinstance(v, list) and len(v) == 2 and all(FRACTION.test(b) for b in v)),
}

OPTIMIZER_TYPES = {cls.__name__: cls for cls in (SGD, Adam, AdamW)}

#: ``xpcnn train --schedule`` values (xpcnn.cli.train_settings.SCHEDULES: the CLI sits above this module).
SCHEDULES = ("none", "step", "cosine", "warmup-cosine", "onecycle")


def _section(value: Any, field: str, required: dict[str, Any], optional_keys: dict[str, Any]) -> None:
    """Check a JSON object's known keys; keys it does not name are left alone."""
    OBJECT(value, field)
    for key, check in required.items():
        if key not in value:
            raise _Invalid(f"{field}.{key}", f"missing (expected {getattr(check, 'expected', 'a value')})")
    for key, check in {**required, **optional_keys}.items():
        if key in value:
            check(value[key], f"{field}.{key}")


def _keywords(cls: type, skip: tuple[str, ...] = ("self",)) -> dict[str, inspect.Parameter]:
    return {name: p for name, p in inspect.signature(cls.__init__).parameters.items()
            if name not in skip and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _layer(spec: Any, field: str) -> None:
    _section(spec, field, {"type": STRING}, {})
    kind = spec["type"]
    if kind not in LAYER_TYPES:
        raise _Invalid(f"{field}.type", f"unknown layer type {kind!r}; xpcnn knows {', '.join(sorted(LAYER_TYPES))}")
    keywords = _keywords(LAYER_TYPES[kind])
    for key, value in spec.items():
        if key == "type":
            continue
        if key not in keywords:
            known = ", ".join(keywords) or "none"
            raise _Invalid(f"{field}.{key}", f"unknown keyword of {kind} (its keywords: {known})")
        if key in NESTED_KEYWORDS:
            _layer_list(value, f"{field}.{key}", nullable=keywords[key].default is None)
            continue
        rule = LAYER_KEYWORDS.get((kind, key)) or LAYER_KEYWORDS.get(key)
        if rule is not None:
            (optional(rule) if keywords[key].default is None else rule)(value, f"{field}.{key}")
    for key, parameter in keywords.items():
        if parameter.default is inspect.Parameter.empty and key not in spec:
            needed = [k for k, p in keywords.items() if p.default is inspect.Parameter.empty]
            raise _Invalid(f"{field}.{key}", f"missing ({kind} needs {', '.join(needed)})")


def _layer_list(value: Any, field: str, nullable: bool = False) -> None:
    """A non-empty list of layer specs (or null where ``nullable``), each checked by :func:`_layer`."""
    if value is None and nullable:
        return
    Rule("a non-empty list of layers" + (" or null" if nullable else ""),
         lambda v: isinstance(v, list) and len(v) > 0)(value, field)
    for j, spec in enumerate(value):
        _layer(spec, f"{field}[{j}]")


def _model_config(value: Any, field: str) -> None:
    _section(value, field, {"layers": LIST}, {"name": optional(STRING)})
    for i, spec in enumerate(value["layers"]):
        _layer(spec, f"{field}.layers[{i}]")


def _optimizer(value: Any, field: str) -> None:
    _section(value, field, {"type": STRING, "step": NON_NEGATIVE_INT, "hyperparameters": OBJECT}, {})
    hyper, where = value["hyperparameters"], f"{field}.hyperparameters"
    cls = OPTIMIZER_TYPES.get(value["type"])  # another type (a user's Optimizer subclass) keeps its own names
    known = _keywords(cls, ("self", "model")) if cls is not None else hyper
    for key, item in hyper.items():
        if key not in known:
            raise _Invalid(f"{where}.{key}", f"unknown hyper-parameter of {value['type']} (its hyper-parameters: "
                                             f"{', '.join(known)})")
        if key in HYPERPARAMETERS:
            HYPERPARAMETERS[key](item, f"{where}.{key}")
    if "lr" not in hyper:
        raise _Invalid(f"{where}.lr", f"missing (expected {POSITIVE.expected})")


def _dropout_streams(value: Any, field: str) -> None:
    OBJECT(value, field)
    stream = Rule("a [seed, draws] pair of ints, draws >= 0",
                  lambda v: isinstance(v, list) and len(v) == 2 and _int(v[0]) and _int(v[1]) and v[1] >= 0)
    for key, item in value.items():
        if not re.fullmatch(r"\d+(\.(block|shortcut)\.\d+)*", key):
            raise _Invalid(f"{field}.{key}", "expected a layer's key as the key: its index, or for a layer in a "
                                             "residual block its state-dict prefix such as 3.block.2")
        stream(item, f"{field}.{key}")


def _epoch_progress(value: Any, field: str) -> None:
    if value is not None:
        _section(value, field, {"loss_sum": optional(NUMBER), "loss_dtype": one_of("float16", "float32", "float64"),
                                "correct": NON_NEGATIVE_INT, "seen": NON_NEGATIVE_INT}, {"seconds": NON_NEGATIVE})


def _trainer(value: Any, field: str) -> None:
    _section(value, field, {"epoch": NON_NEGATIVE_INT, "batch_in_epoch": NON_NEGATIVE_INT,
                            "global_step": NON_NEGATIVE_INT, "seed": INT},
             {"normalization": optional(NORMALIZATION), "dropout_streams": _dropout_streams,
              "epoch_progress": _epoch_progress, "world_size": POSITIVE_INT})


def _run(value: Any, field: str) -> None:
    """``xpcnn train``'s recorded run (xpcnn/cli/run_config.py)."""
    _section(value, field, {}, {
        "model": STRING, "dataset": optional(STRING), "data_dir": optional(STRING), "out": optional(STRING),
        "split_test_set": optional(POSITIVE_INT), "limit_train": optional(POSITIVE_INT), "batch_size": POSITIVE_INT,
        "optimizer": STRING, "lr": optional(POSITIVE), "momentum": optional(NON_NEGATIVE), "seed": INT,
        "epochs": POSITIVE_INT, "image_size": optional(POSITIVE_INT), "channels": optional(CHANNELS),
        "val_fraction": optional(OPEN_FRACTION)})


def _schedule(value: Any, field: str) -> None:
    if value is not None:
        _section(value, field, {"epoch": NON_NEGATIVE_INT, "base_lr": POSITIVE}, {})


def _history(value: Any, field: str) -> None:
    LIST(value, field)
    metrics = {name: optional(NUMBER) for name in ("loss", "accuracy", "images_per_s", "seconds", "val_loss",
                                                   "val_accuracy",
                                         "lr")}
    for i, record in enumerate(value):
        _section(record, f"{field}[{i}]", {}, {"epoch": POSITIVE_INT, **metrics})


def _classes(value: Any, field: str) -> None:
    Rule("a non-empty list of strings", lambda v: isinstance(v, list) and v and all(isinstance(c, str) for c in v)
         )(value, field)


def _policy(value: Any) -> bool:
    try:
        parse_policy(value)
    except ValueError:
        return False
    return True


#: ``xpcnn train --augment``'s recorded policy (xpcnn/cli/augment_settings.py).
AUGMENT_POLICY = Rule("an augmentation policy such as 'none' or 'crop:4+flip'",
                      lambda v: isinstance(v, str) and _policy(v))


def _training(value: Any, field: str) -> None:
    if value is None:
        return
    _section(value, field, {}, {"schedule": one_of(*SCHEDULES), "step_size": optional(POSITIVE_INT),
                                "gamma": optional(POSITIVE), "t_max": optional(POSITIVE_INT),
                                "warmup_epochs": optional(POSITIVE_INT), "warmup_steps": optional(NON_NEGATIVE_INT),
                                "total_steps": optional(POSITIVE_INT),
                                "pct_start": optional(Rule("a number in (0, 1)", lambda v: _finite(v) and 0 < v < 1)),
                                "label_smoothing": optional(UNIT), "early_stopping": optional(POSITIVE_INT),
                                "augment": AUGMENT_POLICY})
    needs = {"step": ("step_size", "gamma"), "cosine": ("t_max",), "warmup-cosine": ("warmup_steps", "total_steps"),
             "onecycle": ("total_steps", "pct_start")}.get(value.get("schedule"), ())
    for key in needs:
        if value.get(key) is None:
            raise _Invalid(f"{field}.{key}", f"missing (the {value['schedule']} schedule needs {' and '.join(needs)})")


#: The top-level keys xpcnn reads and their checks; any other top-level key is left alone.
HEADER: dict[str, Callable[[Any, str], None]] = {
    "format": STRING, "format_version": NON_NEGATIVE_INT, "xpcnn_version": STRING, "saved_at": STRING,
    "kind": STRING, "model_config": _model_config, "model_dtype": one_of("float32", "float64"),
    "optimizer": _optimizer, "trainer": _trainer, "schedule": _schedule, "history": _history,
    "dataset": STRING, "classes": _classes, "normalization": optional(NORMALIZATION), "training": _training,
    "run": _run, "image_shape": IMAGE_SHAPE,
}


def parameter_count(layers: list[dict[str, Any]]) -> int:
    """Trainable values and buffers of the layers in a (validated) ``model_config``, without building them."""
    total = 0
    for spec in layers:
        kind, bias = spec["type"], spec.get("bias", True)
        for key in NESTED_KEYWORDS:
            total += parameter_count(spec.get(key) or [])
        if kind == "Dense":
            total += spec["out_features"] * (spec["in_features"] + bool(bias))
        elif kind == "Conv2D":
            kh, kw = (spec["kernel_size"],) * 2 if _int(spec["kernel_size"]) else spec["kernel_size"]
            total += spec["out_channels"] * (spec["in_channels"] * kh * kw + bool(bias))
        elif kind == "BatchNorm2D":
            total += 4 * spec["num_features"]
    return total


def output_classes(layers: list[dict[str, Any]]) -> int | None:
    """The model's output width where its last layer with weights is a Dense (its out_features), else None."""
    for spec in reversed(layers):
        if spec["type"] == "Dense":
            return spec["out_features"]
        if spec["type"] in ("Conv2D", "BatchNorm2D", "Residual"):
            return None
    return None


def _across_fields(meta: dict[str, Any]) -> None:
    """The checks that relate two fields: the run's dataset, the model's size, its classes and its dropout layers."""
    run = meta.get("run")
    if isinstance(run, dict) and run.get("dataset") is not None and meta.get("dataset") is not None \
            and run["dataset"] != meta["dataset"]:
        raise _Invalid("run.dataset", f"{run['dataset']!r} differs from the checkpoint's dataset "
                                      f"{meta['dataset']!r}")
    config = meta.get("model_config")
    if config is None:
        return
    layers = config["layers"]
    dtype = meta.get("model_dtype", "float32")
    count = parameter_count(layers)
    nbytes = count * (8 if dtype == "float64" else 4)
    memory = exceeds_memory(nbytes)
    if memory is not None:
        raise _Invalid("model_config", f"the model has {count:,} parameters ({format_bytes(nbytes)} as {dtype}), more "
                                       f"than this machine's memory ({format_bytes(memory)})",
                       "load it on a machine with more memory")
    classes, outputs = meta.get("classes"), output_classes(layers)
    if classes is not None and outputs is not None and len(classes) != outputs:
        raise _Invalid("classes", f"{len(classes)} class name(s) for a model with {outputs} outputs; expected "
                                  f"{outputs} names")
    streams = (meta.get("trainer") or {}).get("dropout_streams") or {}
    for key in streams:
        spec = _spec_at(layers, key)
        if spec is None or spec["type"] != "Dropout":
            raise _Invalid(f"trainer.dropout_streams.{key}", f"layer {key} of model_config is not a Dropout layer")


def _spec_at(layers: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    """The (validated) layer spec at a state-dict key such as ``"3"`` or ``"3.block.2"``, or None."""
    parts = key.split(".")
    specs, spec = layers, None
    for k, part in enumerate(parts):
        if k % 2:  # "block" or "shortcut"
            specs = (spec or {}).get(part) or []
            continue
        if int(part) >= len(specs):
            return None
        spec = specs[int(part)]
    return spec


def validate_header(meta: Any, path: str | Path) -> None:
    """Raise :class:`CheckpointError` ``"<path>: header field <field>: <problem>"`` for the first field of
    ``meta`` (a checkpoint's parsed JSON header) that xpcnn could not use; unknown top-level keys are allowed."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: header: expected a JSON object, got {_shown(meta)}; the file is not an "
                              "xpcnn checkpoint, or it is damaged")
    try:
        for key, check in HEADER.items():
            if key in meta:
                check(meta[key], key)
        _across_fields(meta)
    except _Invalid as problem:
        raise CheckpointError(f"{path}: header field {problem.field}: {problem.problem}; {problem.advice}") from None


def validate_arrays(model_state: dict[str, Any], optimizer_slots: dict[str, dict[str, Any]],
                    path: str | Path) -> None:
    """Raise :class:`CheckpointError` naming the file and the array unless every array holds real floats and
    every optimizer slot has its parameter's shape (``model_state``: ``{key: array}``; ``optimizer_slots``:
    ``{key: {slot: array}}``, host arrays)."""
    named = [(f"model:{k}", a) for k, a in model_state.items()]
    named += [(f"optim:{k}:{slot}", a) for k, slots in optimizer_slots.items() for slot, a in slots.items()]
    for name, array in named:
        if array.dtype.kind != "f":
            raise CheckpointError(f"{path}: array {name}: expected real floating-point values (float32 or float64), "
                                  f"got {array.dtype}; xpcnn weights are real floats: save them as such")
    for key, slots in optimizer_slots.items():
        for slot, array in slots.items():
            if key not in model_state:
                raise CheckpointError(f"{path}: array optim:{key}:{slot}: optimizer state for a parameter the file "
                                      f"does not hold (model:{key})")
            if tuple(array.shape) != tuple(model_state[key].shape):
                raise CheckpointError(f"{path}: array optim:{key}:{slot}: shape {tuple(array.shape)} differs from "
                                      f"its parameter's {tuple(model_state[key].shape)}")
