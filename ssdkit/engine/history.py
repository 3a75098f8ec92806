"""Run history: one row of metrics per epoch in CSV and JSON, and a loss/mAP curve PNG."""
import csv
import io
import json
import os

from ssdkit.engine import atomic


class History:
    """Per-epoch metrics of a run, persisted next to the checkpoints.

    Files: ``<prefix>-history.json`` (list of rows), ``<prefix>-history.csv`` and
    ``<prefix>-curves.png``. Rows are dicts such as ``{"epoch": 3, "lr": 0.01, "CrossEntropy": 1.2,
    "SmoothL1": 0.4, "mAP": 0.31, "time_s": 52.0}``.
    """

    def __init__(self, prefix, rows=None):
        self.prefix = prefix
        self.rows = list(rows or [])

    @classmethod
    def load(cls, prefix, up_to_epoch=None):
        """Read an existing history (keeping rows with epoch <= ``up_to_epoch``).

        Raises
        ------
        ValueError
            when ``<prefix>-history.json`` exists but is not a JSON list of rows.
        """
        path = prefix + "-history.json"
        rows = []
        if os.path.exists(path):
            try:
                with open(path) as f:
                    rows = json.load(f)
            except ValueError as err:
                raise ValueError("%s is damaged (%s)" % (path, err)) from None
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise ValueError("%s is not a list of history rows" % path)
        if up_to_epoch is not None:
            rows = [r for r in rows if r.get("epoch", 0) <= up_to_epoch]
        return cls(prefix, rows)

    def append(self, row):
        self.rows.append(dict(row))
        self.save()

    def save(self):
        atomic.write_json(self.prefix + "-history.json", self.rows)
        keys = []
        for row in self.rows:
            keys += [k for k in row if k not in keys]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic.write_text(self.prefix + "-history.csv", buf.getvalue())

    def plot(self, path=None):
        """Draw every numeric column against epoch (losses left, mAP right); return the PNG path."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = path or self.prefix + "-curves.png"
        if not self.rows:
            return None
        epochs = [r["epoch"] for r in self.rows]
        skip = {"epoch", "lr", "time_s", "samples_per_s"}
        loss_keys = [k for k in self.rows[-1] if k not in skip and "AP" not in k]
        ap_keys = [k for k in self.rows[-1] if "AP" in k]
        fig, ax = plt.subplots(figsize=(7, 4))
        for key in loss_keys:
            ax.plot(epochs, [r.get(key) for r in self.rows], marker=".", label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss")
        handles, labels = ax.get_legend_handles_labels()
        if ap_keys:
            ax2 = ax.twinx()
            for key in ap_keys:
                pts = [(r["epoch"], r[key]) for r in self.rows if r.get(key) is not None]
                if pts:
                    ax2.plot(*zip(*pts), marker="o", color="black", label=key)
            ax2.set_ylabel("validation mAP")
            ax2.set_ylim(0, 1)
            h2, l2 = ax2.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
        ax.legend(handles, labels, loc="upper right", fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        with atomic.atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
        return path
