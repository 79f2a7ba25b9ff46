"""TLS as seen from the side: handshake metadata without decrypting.

``TlsParser`` (sans-IO) follows one connection's TLS records in both
directions and reports the ClientHello, ServerHello, certificates, alerts and
how the handshake ended. ``fingerprint`` computes JA3 and JA4 from a
ClientHello, ``x509`` summarises certificates. ``decrypt`` is the one module
here that does I/O: it drives tshark (through pyshark) to decrypt sessions
whose keys are in an NSS key log.
"""
