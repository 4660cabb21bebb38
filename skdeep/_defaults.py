"""Allowed values and defaults shared by the estimators and the ``skdeep`` command.

Their home is a module that imports nothing: the command line builds its parser (its choices,
defaults and help) from them before torch, timm, scikit-learn or pandas is imported, so that
``skdeep --help`` and argument errors appear at once. The modules of each concept re-export
them (``skdeep._inputs.ON_ERROR``...).
"""

#: ``on_error=``: what an unreadable image does.
ON_ERROR = ("raise", "nan")
#: ``precision=``: the compute precisions.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: ``pooling=`` (besides None): how a feature map becomes a vector.
POOLINGS = ("avg", "max", "gem", "avgmax")
#: ``backbone=``: bundled with skdeep, so it works offline.
DEFAULT_BACKBONE = "efficientnet_lite0"

#: ``image_size="auto"``: images at most this many pixels on their longest side count as small...
SMALL_IMAGE_SIDE = 64
#: ...and are fed to the network at this size (upscaled), a good trade of accuracy and speed.
SMALL_IMAGE_INPUT = 96

#: ``augment=``: the named augmentation policies (see skdeep._augment, which defines them).
POLICY_NAMES = ("natural", "symmetric", "light")
#: ``tta=``: the named sets of test-time views (besides None and an int).
TTA_NAMES = ("flip", "symmetric")

#: ``head_init=`` of the fine-tuned classifier: a new head at random, or from a linear probe.
HEAD_INITS = ("random", "probe")
#: ``sampler=`` of the fine-tuned classifier: each image once per epoch, or classes equally.
SAMPLERS = ("shuffle", "balanced")

#: ``duplicates=`` of evaluate: keep near-duplicate images in one fold ("group") or not.
DUPLICATES = ("group", "ignore")

#: The file skdeep writes into each folder of its own output (a report, an audit): a folder
#: holding it is never read as images (skdeep.datasets skips it, with a note).
OUTPUT_MARKER = ".skdeep-output"
#: The gallery of activation maps `skdeep evaluate --explain` writes into its report folder.
ACTIVATION_MAPS_FILE = "activation_maps.png"
