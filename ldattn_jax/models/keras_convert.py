"""Copy keras.applications.Xception weights into our NNX ``Xception``.

Three sources are accepted, all reduced to "the weight arrays of every layer
that has weights, in ``model.layers`` order":

* a live Keras model (the parity test builds one with KERAS_BACKEND=jax);
* a Keras 3 ``.weights.h5`` / ``.keras`` file (``model.save_weights`` /
  ``model.save``): groups ``layers/<class_name>[_<k>]/vars/<i>``, numbered per
  class in ``model.layers`` order;
* a legacy Keras 2 HDF5 weights file (what ``weights='imagenet'`` downloads):
  one group per layer name, ordered by the ``layer_names`` attribute.

Keras leaves the four shortcut convs/BNs unnamed, so layer *names* are not
stable across sessions; the per-kind *order* is. Each layer is therefore
classified by the shapes of its arrays (conv / separable / BN / dense) and
matched, kind by kind, against ``keras_layer_sequence``; every shape is
checked, so a file of another network fails with a precise message.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import h5py
import jax.numpy as jnp
import numpy as np

from ldattn_jax.models.xception import Xception

KINDS = ("conv", "sep", "bn", "dense")


def keras_layer_sequence(middle_blocks: int = 8) -> list[tuple[str, str, str]]:
    """(keras layer name or '' if unnamed, kind, our module path) in Keras layer order."""
    seq = [
        ("block1_conv1", "conv", "conv1.conv"),
        ("block1_conv1_bn", "bn", "conv1.bn"),
        ("block1_conv2", "conv", "conv2.conv"),
        ("block1_conv2_bn", "bn", "conv2.bn"),
    ]
    exit_idx = 4 + middle_blocks
    for ours in range(1, exit_idx + 1):
        k = ours + 1  # Keras counts conv1/conv2 as its block1
        reps = 3 if 4 <= ours < exit_idx else 2
        for i in range(1, reps + 1):
            seq.append((f"block{k}_sepconv{i}", "sep", f"block{ours}.sepconv{i}"))
            seq.append((f"block{k}_sepconv{i}_bn", "bn", f"block{ours}.bn{i}"))
        if reps == 2:  # downsampling blocks: the shortcut follows the main path
            seq.append(("", "conv", f"block{ours}.skip"))
            seq.append(("", "bn", f"block{ours}.skip_bn"))
    k = exit_idx + 2
    seq += [
        (f"block{k}_sepconv1", "sep", "conv3.sepconv"),
        (f"block{k}_sepconv1_bn", "bn", "conv3.bn"),
        (f"block{k}_sepconv2", "sep", "conv4.sepconv"),
        (f"block{k}_sepconv2_bn", "bn", "conv4.bn"),
        ("predictions", "dense", "head"),
    ]
    return seq


def classify(arrays: list[np.ndarray]) -> str:
    """Kind of a Keras layer from its weight arrays (order as Keras stores them)."""
    ranks = [a.ndim for a in arrays]
    if ranks == [4]:
        return "conv"
    if ranks == [4, 4]:
        return "sep"
    if ranks == [1, 1, 1, 1]:
        return "bn"
    if ranks in ([2, 1], [2]):
        return "dense"
    raise ValueError(f"unrecognised Keras layer with weight shapes {[a.shape for a in arrays]}")


def _layers_from_model(keras_model) -> list[tuple[str, list[np.ndarray]]]:
    out = []
    for layer in keras_model.layers:
        ws = [np.asarray(w.numpy()) for w in layer.weights]
        if ws:
            out.append((layer.name, ws))
    return out


def _layers_from_keras3_h5(f: h5py.File, source: str) -> list[tuple[str, list[np.ndarray]]]:
    layers = f["layers"]

    def order(name):
        m = re.fullmatch(r"(.*?)(?:_(\d+))?", name)
        return (m.group(1), int(m.group(2) or 0))

    out = []
    for name in sorted(layers.keys(), key=order):
        g = layers[name]
        if "vars" not in g or len(g["vars"]) == 0:
            continue
        v = g["vars"]
        out.append((name, [np.asarray(v[str(i)]) for i in range(len(v))]))
    if not out:
        raise ValueError(f"{source}: no layer weights under 'layers/' — not a Keras weights file")
    return out


def _layers_from_legacy_h5(f: h5py.File, source: str) -> list[tuple[str, list[np.ndarray]]]:
    g = f.get("model_weights", f)
    out = []
    for raw in g.attrs["layer_names"]:
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        wnames = [
            w.decode() if isinstance(w, bytes) else str(w) for w in g[name].attrs["weight_names"]
        ]
        if wnames:
            out.append((name, [np.asarray(g[name][w]) for w in wnames]))
    return out


def read_keras_weights(path: str | Path) -> list[tuple[str, list[np.ndarray]]]:
    """(group name, arrays) of every layer with weights in a .keras / .weights.h5 / legacy .h5."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Keras weights file {path} does not exist; set config.model.backbone_init to a file "
            "saved with keras_model.save_weights('x.weights.h5') or keras_model.save('x.keras')"
        )
    if zipfile.is_zipfile(path):  # .keras archive: weights live in model.weights.h5
        with zipfile.ZipFile(path) as z:
            if "model.weights.h5" not in z.namelist():
                raise ValueError(
                    f"{path}: .keras archive without model.weights.h5 ({z.namelist()})"
                )
            data = io.BytesIO(z.read("model.weights.h5"))
        with h5py.File(data, "r") as f:
            return _layers_from_keras3_h5(f, str(path))
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not an HDF5 / .keras file ({e})") from e
    with f:
        if "layers" in f:
            return _layers_from_keras3_h5(f, str(path))
        if "layer_names" in f.attrs or ("model_weights" in f):
            return _layers_from_legacy_h5(f, str(path))
        raise ValueError(
            f"{path}: HDF5 file has neither 'layers/' (Keras 3) nor 'layer_names' (Keras 2); "
            f"top-level keys: {list(f.keys())[:10]}"
        )


def _module_at(model, path: str):
    obj = model
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _set(var, value: np.ndarray, what: str):
    if tuple(var.shape) != tuple(value.shape):
        raise ValueError(f"{what}: expected shape {tuple(var.shape)}, found {tuple(value.shape)}")
    var.set_value(jnp.asarray(value, dtype=var.get_value().dtype))


def load_keras_xception(
    model: Xception, source, *, load_head: bool | None = None, source_name: str | None = None
) -> dict:
    """Copy Keras Xception weights into ``model`` (in place).

    Args:
      model: our ``Xception`` (middle_blocks must match the source: 8 for Keras).
      source: a Keras model, or a path to .keras / .weights.h5 / legacy .h5.
      load_head: True = the dense head must match; False = never load it;
        None (default) = load it when its shape matches, else keep ours (an
        ImageNet file has a 1000-way head, or none with include_top=False).

    Returns: {'loaded': [our paths], 'skipped': [our paths with the reason]}.
    """
    if isinstance(source, (str, Path)):
        name = str(source)
        layers = read_keras_weights(source)
    else:
        name = source_name or getattr(source, "name", "keras model")
        layers = _layers_from_model(source)
    by_kind: dict[str, list] = {k: [] for k in KINDS}
    for lname, arrays in layers:
        by_kind[classify(arrays)].append((lname, arrays))

    seq = keras_layer_sequence(model.middle_blocks)
    wanted = {k: [s for s in seq if s[1] == k] for k in KINDS}
    for kind in ("conv", "sep", "bn"):
        if len(by_kind[kind]) != len(wanted[kind]):
            raise ValueError(
                f"{name}: found {len(by_kind[kind])} '{kind}' layers, expected "
                f"{len(wanted[kind])} for Xception with middle_blocks={model.middle_blocks}; "
                "is this a keras.applications.Xception file?"
            )
    report = {"loaded": [], "skipped": []}
    for kind in ("conv", "sep", "bn"):
        for (kname, _, path), (lname, arrays) in zip(wanted[kind], by_kind[kind], strict=True):
            m = _module_at(model, path)
            what = f"{name}: layer '{lname}' (Keras {kname or 'shortcut'}) -> {path}"
            if kind == "conv":
                _set(m.kernel, arrays[0], what + ".kernel")
            elif kind == "sep":
                # Keras depthwise kernel is [3, 3, C, 1]; a grouped flax conv wants [3, 3, 1, C].
                _set(m.depthwise.kernel, np.transpose(arrays[0], (0, 1, 3, 2)), what + ".depthwise")
                _set(m.pointwise.kernel, arrays[1], what + ".pointwise")
            else:
                gamma, beta, mean, var = arrays
                _set(m.scale, gamma, what + ".scale")
                _set(m.bias, beta, what + ".bias")
                _set(m.mean, mean, what + ".mean")
                _set(m.var, var, what + ".var")
            report["loaded"].append(path)

    heads = by_kind["dense"]
    if len(heads) > 1:
        raise ValueError(f"{name}: {len(heads)} dense layers, Xception has one")
    head_ok = bool(heads) and heads[0][1][0].shape == tuple(model.head.kernel.shape)
    if load_head is True and not head_ok:
        found = heads[0][1][0].shape if heads else "no dense layer"
        raise ValueError(
            f"{name}: head kernel expected {tuple(model.head.kernel.shape)}, found {found}; "
            "pass load_head=None to keep a freshly initialised head"
        )
    if head_ok and load_head is not False:
        kernel, *bias = heads[0][1]
        _set(model.head.kernel, kernel, f"{name}: head kernel")
        if bias:
            _set(model.head.bias, bias[0], f"{name}: head bias")
        report["loaded"].append("head")
    else:
        found = heads[0][1][0].shape if heads else "absent"
        report["skipped"].append(f"head (file head {found}, ours {tuple(model.head.kernel.shape)})")
    return report
