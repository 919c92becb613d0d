"""``get_default_optimizer_params`` with newer detectron2's ``lr_factor_func``.

detectron2 0.6's version has no per-parameter lr factor, which ViTDet's layer-wise lr decay
(``lr_factor_func=partial(get_vit_lr_decay_rate, ...)``) needs. This wraps it: the groups are
built by detectron2, then each parameter's lr is multiplied by ``lr_factor_func(name)`` unless an
``overrides`` entry sets its lr explicitly (newer detectron2 applies overrides after the factor).
With a detectron2 whose function takes ``lr_factor_func`` itself (main), it is called as is.
"""

import inspect

from detectron2.solver.build import get_default_optimizer_params as _d2_default_optimizer_params
from detectron2.solver.build import reduce_param_groups

__all__ = ["get_default_optimizer_params"]

_NATIVE = "lr_factor_func" in inspect.signature(_d2_default_optimizer_params).parameters


def get_default_optimizer_params(
    model,
    base_lr=None,
    weight_decay=None,
    weight_decay_norm=None,
    bias_lr_factor=1.0,
    weight_decay_bias=None,
    lr_factor_func=None,
    overrides=None,
):
    """detectron2's parameter groups, plus ``lr_factor_func``.

    Args:
        model (nn.Module): the model.
        base_lr, weight_decay, weight_decay_norm, bias_lr_factor, weight_decay_bias, overrides:
            as in ``detectron2.solver.get_default_optimizer_params``.
        lr_factor_func (callable or None): full parameter name (e.g.
            ``backbone.net.blocks.0.attn.qkv.weight``) -> lr multiplier. Needs ``base_lr``.
    Returns:
        list[dict]: parameter groups for a ``torch.optim`` optimizer.
    """
    kwargs = dict(
        base_lr=base_lr,
        weight_decay=weight_decay,
        weight_decay_norm=weight_decay_norm,
        bias_lr_factor=bias_lr_factor,
        weight_decay_bias=weight_decay_bias,
        overrides=overrides,
    )
    if _NATIVE:
        return _d2_default_optimizer_params(model, lr_factor_func=lr_factor_func, **kwargs)
    groups = _d2_default_optimizer_params(model, **kwargs)
    if lr_factor_func is None:
        return groups
    if base_lr is None:
        raise ValueError("get_default_optimizer_params: lr_factor_func requires base_lr")
    overrides = overrides or {}
    names = {}
    for name, param in model.named_parameters():
        names.setdefault(param, name)
    params = []
    for group in groups:
        hyperparams = {k: v for k, v in group.items() if k != "params"}
        for param in group["params"]:
            name = names[param]
            hp = dict(hyperparams)
            if "lr" not in overrides.get(name.rsplit(".", 1)[-1], {}):
                hp["lr"] = hp.get("lr", base_lr) * lr_factor_func(name)
            params.append({"params": [param], **hp})
    return reduce_param_groups(params)
