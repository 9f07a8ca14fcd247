"""The bundle contract, once: what training exports and the service serves.

Torch-free and service-free (lint-imports keeps it so). `manifest` is the typed manifest and the
tasks; `layout` the directory layout and hashing; `validate` the one validation both sides call;
`publish` staging and atomic publication; `datasets` the data rules both sides share; `ood` the
out-of-distribution score and its calibration.
docs/contracts.md section 2 describes it in prose.
"""
from .errors import BundleError
from .layout import (
    CLASSIFY_FILE,
    GRADCAM_FILE,
    MANIFEST,
    NAME_RE,
    VERSION_RE,
    bundle_dir,
    candidate_dirs,
    hash_files,
    next_version,
    sha256_file,
)
from .manifest import (
    DISTANCES,
    FLIPS,
    FORMAT_VERSION,
    INTERPOLATIONS,
    SUPPORTED_FORMATS,
    TASKS,
    Embedding,
    Graph,
    Manifest,
    OutOfDistribution,
    PixelSize,
    Preprocessing,
    Quantization,
    Task,
    TensorSpec,
    TestTimeAugmentation,
    Tolerance,
)
from .publish import portable, publish, staging, write_manifest
from .validate import (
    ORT_DTYPES,
    ValidBundle,
    check_io,
    parse_manifest,
    read_manifest,
    signature,
    validate_bundle,
)

__all__ = [
    "CLASSIFY_FILE", "DISTANCES", "FLIPS", "FORMAT_VERSION", "GRADCAM_FILE", "INTERPOLATIONS", "MANIFEST", "NAME_RE",
    "ORT_DTYPES", "SUPPORTED_FORMATS", "TASKS", "VERSION_RE", "BundleError", "Embedding", "Graph", "Manifest",
    "OutOfDistribution", "PixelSize", "Preprocessing", "Quantization", "Task", "TensorSpec", "TestTimeAugmentation",
    "Tolerance",     "ValidBundle", "bundle_dir", "candidate_dirs", "check_io", "hash_files", "next_version", "parse_manifest", "portable", "publish", "read_manifest",
    "sha256_file", "signature", "staging", "validate_bundle", "write_manifest",
]
