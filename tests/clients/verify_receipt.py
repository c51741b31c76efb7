"""Verifies Meridian's receipts with PyJWT, a standard JOSE library, as an auditor's own tooling
would: the key chosen from the JWK Set by the receipt's `kid`, the signature checked as `EdDSA`.
Run by tests/e2e_evidence.rs with JWKS (the set /.well-known/jwks.json served), RECEIPT (a
response's `x-meridian-receipt`) and TAMPERED (the same with one claim changed). Prints the
verified claims as JSON; exits 1 if the receipt does not verify or the tampered one does."""

import json
import os
import sys

import jwt

jwks = jwt.PyJWKSet.from_dict(json.loads(os.environ["JWKS"]))


def verify(token):
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwks.keys if k.key_id == kid)
    return jwt.decode(token, key.key, algorithms=["EdDSA"])


claims = verify(os.environ["RECEIPT"])
try:
    verify(os.environ["TAMPERED"])
    print("FAIL the tampered receipt verified")
    sys.exit(1)
except jwt.InvalidSignatureError:
    pass
print(json.dumps(claims))
