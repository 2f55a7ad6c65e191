"""Generated line → graph node map of model.py (for error messages); do not edit."""

LINES = (
    (69, 0),
    (84, 1),
    (88, 2),
    (103, 3),
    (106, 4),
    (109, 5),
    (113, 6),
)
LABELS = (
    "ai.torsh::FusedConv node '/conv1/Conv_fused'",
    "MaxPool node '/pool1/MaxPool'",
    "ai.torsh::FusedConv node '/conv2/Conv_fused'",
    "GlobalAveragePool node '/pool2/GlobalAveragePool'",
    "Flatten node '/flatten/Flatten'",
    "ai.torsh::FusedMatMul node '/fc/Gemm_fused'",
    "Softmax node '/softmax/Softmax'",
)
