"""Parameters and forward multiply-adds of every variant, beside the paper's Table VII.

    python -m ldattn_jax.summary --config configs/ffpp.py [--json]
    python -m ldattn_jax.summary --config configs/ffpp.py --config.model.image_size=118 ...

Multiply-adds = XLA's cost-analysis flops / 2 for one forward at batch 1
(inference mode), at the config's sizes. Nothing is allocated: the model is
built with nnx.eval_shape and only lowered, never run.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from data_prep import cli
from ldattn_jax.models.lda import VARIANTS, build_model, required_frames

# Paper Table VII: (GMACs, M params). Its "Flops" are multiply-adds.
PAPER = {
    "xception": (14.60, 22.38),
    "lda_spatial": (14.92, 23.17),
    "lda_temporal": (15.41, 24.74),
    "lda_st": (15.82, 25.57),
}


def _load_config_file(path: str, overrides: list[str]):
    """Fallback config loader: get_config() of a file + --config.a.b=value overrides."""
    spec = importlib.util.spec_from_file_location("_summary_config", path)
    if spec is None or not Path(path).is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for item in overrides:
        key, sep, raw = item.removeprefix("--config.").partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like --config.model.image_size=118")
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node[p]
        if leaf not in node:
            raise KeyError(f"override {item!r}: config has no key {key!r}")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw  # a bare string such as lda_st
        node[leaf] = type(node[leaf])(value) if node[leaf] is not None else value
    return config


def load_config(path: str, overrides: list[str] | None = None):
    try:  # the training code's loader, when it exists, is the reference
        from ldattn_jax.config_utils import load_config as shared_loader
    except ImportError:
        return _load_config_file(path, overrides or [])
    return shared_loader(path, overrides=overrides or [])


def count_params(model) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def measure(model_config, name: str) -> dict:
    """{'name', 'params', 'macs'} of one variant (abstract build + lowering only)."""
    cfg = model_config.copy_and_resolve_references()
    cfg.name = name
    cfg.vit_init = ""  # init files change values, not sizes
    cfg.backbone_init = ""
    model = nnx.eval_shape(lambda: build_model(cfg, rngs=nnx.Rngs(0)))
    model.eval()
    graphdef, state = nnx.split(model)
    s = cfg.image_size
    frames = jax.ShapeDtypeStruct((1, required_frames(cfg), s, s, 3), jnp.uint8)

    def forward(state, frames):
        return nnx.merge(graphdef, state)(frames)[0]

    cost = jax.jit(forward).lower(state, frames).cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax returned one dict per computation
        cost = cost[0]
    attention = {
        k: count_params(getattr(model, k)) for k in ("spatial", "temporal") if getattr(model, k)
    }
    return {
        "name": name,
        "params": count_params(model),
        "attention_params": attention,
        "macs": float(cost["flops"]) / 2,
    }


def summarize(config) -> dict:
    rows = [measure(config.model, name) for name in VARIANTS]
    base = rows[0]
    for r in rows:
        paper_macs, paper_params = PAPER[r["name"]]
        r["paper_gmacs"], r["paper_mparams"] = paper_macs, paper_params
        r["gmacs"], r["mparams"] = r["macs"] / 1e9, r["params"] / 1e6
        r["delta_gmacs"] = (r["macs"] - base["macs"]) / 1e9
        r["delta_mparams"] = (r["params"] - base["params"]) / 1e6
        r["paper_delta_gmacs"] = round(paper_macs - PAPER["xception"][0], 2)
        r["paper_delta_mparams"] = round(paper_params - PAPER["xception"][1], 2)
        for key in ("gmacs", "mparams"):
            paper = r[f"paper_delta_{key}"]
            r[f"delta_{key}_vs_paper"] = r[f"delta_{key}"] / paper - 1 if paper else None
    m = config.model
    geometry = {
        k: m[k] for k in ("image_size", "attention_size", "patch_size", "embed_dim", "stack")
    }
    return {"geometry": geometry, "batch": 1, "rows": rows}


def format_table(summary: dict) -> str:
    g = summary["geometry"]
    lines = [
        f"image {g['image_size']}, attention {g['attention_size']}/{g['patch_size']}, "
        f"D={g['embed_dim']}, n={g['stack']}, batch 1 "
        "(GMACs = XLA flops / 2; paper = Table VII)",
        f"{'model':<13}{'GMACs':>8}{'paper':>8}{'Mparams':>9}{'paper':>8}"
        f"{'dGMACs':>9}{'paper':>7}{'rel':>7}{'dMparams':>10}{'paper':>7}{'rel':>7}",
    ]

    def rel(x):
        return f"{x:+.0%}" if x is not None else "-"

    for r in summary["rows"]:
        lines.append(
            f"{r['name']:<13}{r['gmacs']:>8.2f}{r['paper_gmacs']:>8.2f}"
            f"{r['mparams']:>9.2f}{r['paper_mparams']:>8.2f}"
            f"{r['delta_gmacs']:>+9.2f}{r['paper_delta_gmacs']:>+7.2f}"
            f"{rel(r['delta_gmacs_vs_paper']):>7}"
            f"{r['delta_mparams']:>+10.2f}{r['paper_delta_mparams']:>+7.2f}"
            f"{rel(r['delta_mparams_vs_paper']):>7}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(
        prog="python -m ldattn_jax.summary", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--config", required=True, help="config file with get_config()")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args, overrides = parser.parse_with_overrides(argv)
    from ldattn_jax.config_utils import ConfigError

    try:
        config = load_config(args.config, overrides)
    except ConfigError as e:  # a missing file, an unknown key, a value of the wrong type
        parser.error(str(e))
    try:
        summary = summarize(config)
    except ValueError as e:
        # A geometry the model refuses (config.model.stack=0, ...): the overrides
        # are what this command is for, so say it in one line. With the type: a
        # ValueError from deeper down may be a bug, not the command line.
        parser.error(f"{type(e).__name__}: {e}")
    print(json.dumps(summary, indent=2) if args.json else format_table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
