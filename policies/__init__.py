"""Inline suppression policies (SPEC §3): pure decision units composed by one chain.

Layering: imports only ``storage`` from outside; ``relay`` uses this package, never the other way
round. The decision units reach storage only through the :class:`SuppressionIndex` protocol;
:class:`SuppressionService` is the one writer of list entries and their expiries.
"""

from policies.address import Address, FormatError, parse_address
from policies.base import Decision, Policy, RecipientContext, SuppressionIndex, Verdict
from policies.block import BlockPolicy
from policies.bounce import BouncePolicy, TencentRules, bounce_expiry, is_tencent
from policies.chain import CheckResult, PolicyChain, default_chain
from policies.complaint import ComplaintPolicy
from policies.no_interception import NoInterceptionPolicy
from policies.reasons import (
    REASON_BLOCK,
    REASON_BOUNCE,
    REASON_COMPLAINT,
    REASON_FORMAT_ERROR,
    REASON_UNSUBSCRIBE,
)
from policies.suppression import COMPLAINT_TTL, ListChange, SuppressionService
from policies.syntax import SyntaxPolicy
from policies.unsubscribe import UnsubscribePolicy

__all__ = [
    "COMPLAINT_TTL",
    "REASON_BLOCK",
    "REASON_BOUNCE",
    "REASON_COMPLAINT",
    "REASON_FORMAT_ERROR",
    "REASON_UNSUBSCRIBE",
    "Address",
    "BlockPolicy",
    "BouncePolicy",
    "CheckResult",
    "ComplaintPolicy",
    "Decision",
    "FormatError",
    "ListChange",
    "NoInterceptionPolicy",
    "Policy",
    "PolicyChain",
    "RecipientContext",
    "SuppressionIndex",
    "SuppressionService",
    "SyntaxPolicy",
    "TencentRules",
    "UnsubscribePolicy",
    "Verdict",
    "bounce_expiry",
    "default_chain",
    "is_tencent",
    "parse_address",
]
