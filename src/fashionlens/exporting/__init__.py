"""Building exports of a saved model: ONNX / OpenVINO IR checked against torch
(`export`), int8 OpenVINO calibrated on the user's photos (`quantize`), written aside and
renamed into place (`writing`), and made on first use (`ensure`).

It sits above what runs a model (`inference.runtime`, `inference.backends`, and
`inference.export_cache`, which finds an export to run) and below what loads one for a
user (`inference.loading`, the Predictor): tests/test_import_structure.py keeps it so.
"""
