"""The state broker: the only LMDB writer, behind the ZeroMQ contract of :mod:`shared.protocol`."""
