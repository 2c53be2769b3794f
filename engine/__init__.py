"""rfmx: exact, streaming RFM (recency, frequency, monetary) customer scoring.

Importing rfmx is cheap: nothing compiles and Numba is not imported until a kernel runs.

>>> import rfmx
>>> table = rfmx.aggregate("orders.parquet", customer="customer_id", time="order_time", amount="amount")
"""
from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "aggregate": ("api", "aggregate"),
    "build_state": ("api", "build_state"),
    "RFMState": ("state", "RFMState"),
    "timeline": ("pipeline", "timeline"),
    "lifecycle": ("stages", "lifecycle"),
    "alerts": ("early_warnings", "alerts"),
    "TimelineState": ("history", "TimelineState"),
    "warmup": ("warmup", "warmup"),
    "RfmxError": ("errors", "RfmxError"),
    "generate_orders": ("generate", "generate_orders"),
    "write_orders": ("generate", "write_orders"),
    "write_table": ("sinks", "write_table"),
    "DatabaseSource": ("databases", "DatabaseSource"),
    "DatabaseTable": ("databases", "DatabaseTable"),
    "score": ("scores", "score"),
    "SegmentMap": ("segments", "SegmentMap"),
    "segment_summary": ("concentration", "segment_summary"),
    "value_concentration": ("concentration", "concentration"),
    "migration": ("migrations", "migration"),
    "migration_summary": ("migrations", "migration_summary"),
    "segment_changes": ("migrations", "segment_changes"),
    "cohort_table": ("cohorts", "cohort_table"),
    "KMeans": ("cluster", "KMeans"),
    "Ward": ("hierarchy", "Ward"),
    "BTYDState": ("clv", "BTYDState"),
    "btyd_summary": ("clv", "summary"),
    "BGNBD": ("clv", "BGNBD"),
    "ParetoNBD": ("clv", "ParetoNBD"),
    "GammaGamma": ("clv", "GammaGamma"),
    "build_report": ("report", "build_report"),
    "write_report": ("report", "write_report"),
    "plot": ("plot", None),  # the module: rfmx.plot.<figure>(...) (needs the report extra)
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = importlib.import_module(f".{module}", __name__)
        value = value if attr is None else getattr(value, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rfmx' has no attribute {name!r}")


def __dir__():
    return __all__
