"""Metric series (the curves the site draws), held as sorted arrays sliced per run and name."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

#: Metric series plotted as convergence curves.
TRAIN_LOSS = "train_loss"
BATCH_LOSS = "train_loss_batch"
#: Metric series the site reads (the curves it draws): train losses, every validation metric
#: and the optimizers' statistics. Training accuracy/RMSE only appear as final values.
SERIES_NAMES: tuple[str, ...] = (TRAIN_LOSS, BATCH_LOSS)
SERIES_PREFIXES: tuple[str, ...] = ("val_", "opt_")


class MetricSeries:
    """Every metric row, sorted by (run, name, step), sliced per (run, name) without copying."""

    def __init__(self, frame: pd.DataFrame) -> None:
        if frame.empty:
            self.run_id = np.zeros(0, dtype=np.int64)
            self.step = np.zeros(0, dtype=np.int64)
            self.time = np.zeros(0)
            self.value = np.zeros(0)
            self._slices: dict[int, dict[str, slice]] = {}
            return
        names = frame["name"].astype("category")
        codes = names.cat.codes.to_numpy()
        categories = [str(c) for c in names.cat.categories]
        run_id = frame["run_id"].to_numpy(dtype=np.int64)
        step = frame["step"].to_numpy(dtype=np.int64)
        order = np.lexsort((step, codes, run_id))
        self.run_id = run_id[order]
        self.step = step[order]
        self.time = frame["time_s"].to_numpy(dtype=float)[order]
        self.value = frame["value"].to_numpy(dtype=float)[order]
        codes = codes[order]
        change = np.flatnonzero((np.diff(self.run_id) != 0) | (np.diff(codes) != 0)) + 1
        starts = np.concatenate([[0], change])
        ends = np.concatenate([change, [len(order)]])
        slices: dict[int, dict[str, slice]] = {}
        for start, end, rid, code in zip(
            starts.tolist(), ends.tolist(), self.run_id[starts].tolist(), codes[starts].tolist()
        ):
            slices.setdefault(rid, {})[categories[code]] = slice(start, end)
        self._slices = slices

    def names(self, run_id: int) -> list[str]:
        return list(self._slices.get(run_id, {}))

    def get(self, run_id: int, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(steps, times, values)`` of one run's metric; empty arrays when absent."""
        sl = self._slices.get(run_id, {}).get(name)
        if sl is None:
            return self.step[:0], self.time[:0], self.value[:0]
        return self.step[sl], self.time[sl], self.value[sl]

    def frame(self, run_ids: Iterable[int], names: Iterable[str]) -> pd.DataFrame:
        """Long rows of the given runs and metric names (``run_id, name, step, time_s, value``)."""
        wanted = set(names)
        parts_r, parts_n, parts_s = [], [], []
        for rid in run_ids:
            for name, sl in self._slices.get(int(rid), {}).items():
                if name in wanted:
                    parts_r.append(np.arange(sl.start, sl.stop))
                    parts_n.append(np.full(sl.stop - sl.start, name, dtype=object))
                    parts_s.append(sl)
        if not parts_r:
            return pd.DataFrame({"run_id": [], "name": [], "step": [], "time_s": [], "value": []})
        idx = np.concatenate(parts_r)
        return pd.DataFrame(
            {
                "run_id": self.run_id[idx],
                "name": np.concatenate(parts_n),
                "step": self.step[idx],
                "time_s": self.time[idx],
                "value": self.value[idx],
            }
        )
