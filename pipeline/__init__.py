"""lipsync-pipeline: conform footage, lip-sync it through a PixVerse-model provider, hand off the result.

    import pipeline
    summary = pipeline.run_config("configs/rehearsal.toml", rehearse=True)
    print(summary.outcomes[0].final)

The functions (`pipeline.api`) and the errors are imported with the package; the result models are loaded
on first use (`pipeline.RunSummary`), so `import pipeline` loads no media or ML library. docs/api.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .api import ProbeResult, animate_image, lip_sync, prepare_media, probe, run_config, verify
from .errors import (
    AuthError,
    BillingError,
    ConfigError,
    GenerationFailed,
    InputError,
    JobTimeout,
    LipsyncError,
    Moderated,
    ProviderError,
    ResultPending,
    ToolError,
    UncertainCreate,
    ValidationError,
    VerificationError,
)

if TYPE_CHECKING:
    from .animate import AnimateResult
    from .prepare import PrepareResult, Segment
    from .providers.flow import FlowHooks
    from .run.runner import JobOutcome, RunSummary
    from .stages.probe import MediaProbe
    from .stages.sync import SyncMode
    from .stages.verify import VerifyReport
    from .submit import SubmitResult

__version__ = "0.1.0"

# name -> the module that defines it, imported when the name is first used
_MODELS = {
    "AnimateResult": "pipeline.animate",
    "FlowHooks": "pipeline.providers.flow",
    "JobOutcome": "pipeline.run.runner",
    "MediaProbe": "pipeline.stages.probe",
    "PrepareResult": "pipeline.prepare",
    "RunSummary": "pipeline.run.runner",
    "Segment": "pipeline.prepare",
    "SubmitResult": "pipeline.submit",
    "SyncMode": "pipeline.stages.sync",
    "VerifyReport": "pipeline.stages.verify",
}

__all__ = [
    "AnimateResult",
    "AuthError",
    "BillingError",
    "ConfigError",
    "FlowHooks",
    "GenerationFailed",
    "InputError",
    "JobOutcome",
    "JobTimeout",
    "LipsyncError",
    "MediaProbe",
    "Moderated",
    "PrepareResult",
    "ProbeResult",
    "ProviderError",
    "ResultPending",
    "RunSummary",
    "Segment",
    "SubmitResult",
    "SyncMode",
    "ToolError",
    "UncertainCreate",
    "ValidationError",
    "VerificationError",
    "VerifyReport",
    "__version__",
    "animate_image",
    "lip_sync",
    "prepare_media",
    "probe",
    "run_config",
    "verify",
]


def __getattr__(name: str) -> Any:
    if name in _MODELS:
        return getattr(importlib.import_module(_MODELS[name]), name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
