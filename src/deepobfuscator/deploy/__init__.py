"""Split deployment: export O and C, benchmark O on this machine, serve C over HTTP, and a light client.

Nothing is imported here so that ``deepobfuscator.deploy.client`` and ``deepobfuscator.deploy.wire``
stay importable without torch (numpy, onnxruntime, PIL and the standard library only).
"""
