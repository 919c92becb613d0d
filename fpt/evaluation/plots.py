"""A PNG of the training curves: losses (left) and evaluation APs (right)."""

import json

__all__ = ["read_metrics", "plot_metrics"]


def read_metrics(path):
    """Rows of detectron2's ``metrics.json`` (one json object per line)."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_metrics(metrics_json, output_png):
    """Plot ``total_loss``/``loss_*`` (solid) beside their test-set values ``val_*`` (dashed,
    ``train.val_loss_period``) and ``<task>/AP``, ``AP50``, ``AP75`` against iteration; returns
    the path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_json)
    fig, (ax_loss, ax_ap) = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, keep in (
        (
            ax_loss,
            lambda k: k.removeprefix("val_") == "total_loss" or k.startswith(("loss_", "val_")),
        ),
        (ax_ap, lambda k: k.split("/")[-1] in ("AP", "AP50", "AP75")),
    ):
        keys = sorted({k for r in rows for k in r if keep(k)})
        for key in keys:
            points = [(r["iteration"], r[key]) for r in rows if key in r]
            ax.plot(
                *zip(*points),
                marker="o" if len(points) < 10 else None,
                label=key,
                linewidth=2 if key in ("total_loss", "val_total_loss") else 1,
                linestyle="--" if key.startswith("val_") else "-",
            )
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if keys:
            ax.legend(fontsize=7)
    ax_loss.set_title("losses (dashed: test set)")
    ax_ap.set_title("evaluation AP")
    fig.tight_layout()
    fig.savefig(output_png, dpi=100)
    plt.close(fig)
    return output_png
