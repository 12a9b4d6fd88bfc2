"""Code that runs ON the edge device: Python 3.8, numpy, tensorrt, pycuda (and onnxruntime).

Nothing here imports torch or the rest of edgekd, so this folder can be copied to a
Jetson alone. The host side imports from here (measurement maths, bench file schema)
so that both sides measure and record the same way.
"""
