"""Standard normal draws from a ChaCha20 keystream: the CSPRNG behind DP-SGD's noise.

A `ChaChaGaussian` holds one ChaCha20 cipher (the `cryptography` package, OpenSSL's
implementation) under a fresh 256-bit key from the OS CSPRNG and reads its keystream (the
encryption of zero bytes) in order. Each 64-bit word keeps its top 53 bits as a uniform on the
2^-53 grid of [0, 1); pairs of uniforms become pairs of N(0, 1) draws by Box–Muller,

    z0 = sqrt(-2 ln(1 - u1)) cos(2 pi u2),   z1 = sqrt(-2 ln(1 - u1)) sin(2 pi u2)

in float64 (1 - u1 lies in (0, 1], so the logarithm is finite). Unlike a seeded
`torch.Generator` (Philox or Mersenne Twister, 64-bit seed), the stream cannot be predicted
from earlier outputs or from a guessable seed. What remains is the float weakness of any
continuous Gaussian (docs/privacy.md §6: Mironov 2012): the draws are doubles, not an exact
Gaussian, and the sum gradient + noise is rounded to the parameter's dtype.

One key gives 2^32 blocks of 64 bytes (256 GiB, 2^34 Gaussians) before ChaCha20's 32-bit block
counter wraps; `normal` refuses to go past it. Only tests pass a fixed key.
"""

from __future__ import annotations

import math
import secrets

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

__all__ = ["ChaChaGaussian"]

#: Keystream bytes one key may produce: 2^32 blocks of 64 bytes.
MAX_STREAM_BYTES = 64 * 2**32


class ChaChaGaussian:
    """i.i.d. N(0, 1) draws (float64) from a ChaCha20 keystream."""

    def __init__(self, key: bytes | None = None) -> None:
        key = secrets.token_bytes(32) if key is None else key
        if len(key) != 32:
            raise ValueError("a ChaCha20 key has 32 bytes")
        # 16-byte nonce = 32-bit block counter (from 0) + 96-bit nonce; each key is used once
        self._stream = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
        self._used = 0
        self.draws = 0  # N(0, 1) values handed out, so tests can see the source is used

    def uniforms(self, count: int) -> npt.NDArray[np.float64]:
        """`count` uniforms in [0, 1) on the 2^-53 grid (the top 53 bits of each keystream word)."""
        size = 8 * count
        if self._used + size > MAX_STREAM_BYTES:
            raise RuntimeError("the ChaCha20 keystream of this key is spent: start a new ChaChaGaussian")
        self._used += size
        words = np.frombuffer(self._stream.update(bytes(size)), dtype="<u8")
        return (words >> np.uint64(11)).astype(np.float64) * 2.0**-53

    def normal(self, count: int) -> npt.NDArray[np.float64]:
        """`count` i.i.d. N(0, 1) draws (Box–Muller on pairs of uniforms)."""
        pairs = math.ceil(count / 2)
        u = self.uniforms(2 * pairs).reshape(2, pairs)
        radius = np.sqrt(-2.0 * np.log1p(-u[0]))
        angle = 2.0 * math.pi * u[1]
        self.draws += count
        return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:count]
