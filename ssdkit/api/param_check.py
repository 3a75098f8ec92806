"""Check that model parameters fit a graph before anything is written or run.

MXNet reports a parameter of the wrong shape only when the model is bound, deep in the executor
("Incompatible attr ... expected [32], got [28]"), and ``deploy`` used to write such a model without
complaint. :func:`check_params` compares the names and shapes of the parameters with the graph's
(``infer_shape`` from the input shapes) and raises one :class:`~ssdkit.errors.ParameterMismatchError`
naming every mismatch and, when the model's meta file is at hand, the likely cause (a class count
that differs from the meta's class list, or weights of another network).
"""
from ssdkit.errors import ParameterMismatchError

_SHOWN = 4      # mismatches named in the message; the rest are counted


def graph_param_shapes(symbol, input_shapes):
    """``(arg_shapes, aux_shapes)``: dicts name -> shape tuple of the parameters of ``symbol``.

    Parameters
    ----------
    symbol : mx.sym.Symbol
    input_shapes : list of (name, shape) of the graph inputs, e.g. ``[("data", (1, 3, 128, 128))]``;
        these names are not parameters
    """
    inputs = dict(input_shapes)
    arg_shapes, _, aux_shapes = symbol.infer_shape(**inputs)
    if arg_shapes is None:
        raise RuntimeError("the graph's parameter shapes do not follow from its input shapes %s" % (inputs,))
    args = {n: tuple(s) for n, s in zip(symbol.list_arguments(), arg_shapes) if n not in inputs}
    return args, {n: tuple(s) for n, s in zip(symbol.list_auxiliary_states(), aux_shapes)}


def check_params(symbol, arg_params, aux_params, input_shapes, *, source, meta=None, meta_source=None,
                 allow_extra=False):
    """Raise :class:`~ssdkit.errors.ParameterMismatchError` unless the parameters fit ``symbol``.

    Parameters
    ----------
    symbol : mx.sym.Symbol, the graph to run or write
    arg_params, aux_params : dict name -> NDArray (as read from ``source``)
    input_shapes : list of (name, shape) of the graph inputs (``family.inference_shapes(meta, 1)``)
    source : str, the parameter file, named in the message
    meta : dict or None, the model's meta file; with it the message names the likely cause
    meta_source : str or None, the meta file's path, named in the message
    allow_extra : bool, parameters the graph does not use are dropped silently (e.g. an imported file
        that holds more than ssdkit's graph); otherwise they are an error too (weights of another network)

    Every mismatch is collected: parameters the graph needs that ``source`` lacks, parameters it has
    that the graph lacks, and parameters whose shape differs (``graph (28, 64, 3, 3), file (32, 64, 3, 3)``).
    """
    want_arg, want_aux = graph_param_shapes(symbol, input_shapes)
    missing, extra, shapes = [], [], {}
    for want, have in ((want_arg, arg_params), (want_aux, aux_params)):
        for name, shape in want.items():
            if name not in have:
                missing.append(name)
            elif tuple(have[name].shape) != shape:
                shapes[name] = (shape, tuple(have[name].shape))
        if not allow_extra:
            extra += sorted(set(have) - set(want))
    if not (missing or extra or shapes):
        return
    problems = (["%s: graph %s, file %s" % (n, _fmt(e), _fmt(f)) for n, (e, f) in shapes.items()]
                + ["%s: missing from the file" % n for n in missing]
                + ["%s: in the file, not in the graph" % n for n in extra])
    what = "the graph"
    if meta is not None:
        what = "the graph of %s (network %s, %d classes)" % (meta_source or "the meta file", meta["network"],
                                                             len(meta["class_names"]))
    cause = _likely_cause(meta, shapes, input_shapes, names_differ=bool(missing or extra))
    shown = "; ".join(problems[:_SHOWN]) + ("; and %d more" % (len(problems) - _SHOWN)
                                             if len(problems) > _SHOWN else "")
    raise ParameterMismatchError("the parameters in %s do not fit %s%s. %d mismatch%s: %s"
                                 % (source, what, ": " + cause if cause else "", len(problems),
                                    "es" if len(problems) > 1 else "", shown), problems)


def _fmt(shape):
    return "(%s%s)" % (", ".join(str(d) for d in shape), "," if len(shape) == 1 else "")


def _likely_cause(meta, shapes, input_shapes, *, names_differ):
    """A sentence for the usual causes, or "" when none explains every mismatch."""
    if meta is None:
        return ""
    if names_differ:
        return ("parameter names differ, so the file holds weights of another network than the meta's %s"
                % meta["network"])
    classes = _implied_class_count(meta, shapes, input_shapes)
    if classes is not None:
        return ("the checkpoint was trained with %d classes, the meta says %d (%s)"
                % (classes, len(meta["class_names"]), ", ".join(meta["class_names"])))
    return ("the shapes differ beyond the class count, so the file holds weights of another network or "
            "input settings than the meta's %s" % meta["network"])


def _implied_class_count(meta, shapes, input_shapes):
    """The class count that explains every shape mismatch, or None.

    The graph is rebuilt from ``meta`` with ``C`` and ``C + 1`` classes: a parameter whose shape changes
    is class-dependent, each differing dimension linear in the class count, so the file's dimension
    gives the count it was trained with.
    """
    from ssdkit.api.family import family_of

    family = family_of(meta)
    names = list(meta["class_names"])
    base, _ = graph_param_shapes(family.inference_symbol(meta), input_shapes)
    more, _ = graph_param_shapes(family.inference_symbol(dict(meta, class_names=names + ["_extra"])),
                                 input_shapes)
    counts = set()
    for name, (_expected, found) in shapes.items():
        if name not in base or base[name] == more[name] or len(found) != len(base[name]):
            return None
        for at_c, at_c1, have in zip(base[name], more[name], found):
            slope = at_c1 - at_c
            if slope == 0:
                if have != at_c:
                    return None
                continue
            if (have - at_c) % slope:
                return None
            counts.add(len(names) + (have - at_c) // slope)
    if len(counts) != 1:
        return None
    count = counts.pop()
    return count if count >= 1 else None
