"""Code that runs ON the edge device: Python 3.8, numpy, tensorrt, pycuda (and onnxruntime).

Nothing here imports torch or the rest of edgekd, so this folder can be copied to a
Jetson alone. The host side imports from here (measurement maths, bench file schema, the
artifact catalogue, file hashing and atomic writes in files.py) so that both sides measure,
record and write files the same way.
"""
