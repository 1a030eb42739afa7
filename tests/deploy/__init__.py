"""Tests of mrcnn.deploy: export to ONNX and TorchScript, the sidecar, parity with PyTorch."""
