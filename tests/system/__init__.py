"""System tests: real namespaces, interfaces and privileged sockets.

They need root and iproute2 and skip without them, unless
``LBFRAME_SYSTEM_TESTS=required`` (CI), which turns a skip into a failure;
see :mod:`tests.system.netns`.
"""
