"""Phrase families of bounce diagnostics, tested with wordings the corpus does not contain.

The label convention is the corpus one (a bounce reason mapped to our soft-bounce category, see
``tests/fixtures/feedback/README.md``): user unknown / host unknown / moved -> not_exist; blocked,
bad reputation, missing PTR -> ip_rejection; spam, virus, content -> spam_rejected; filtered,
sender refused, policy, relaying, not accepting, suspended, SPF/DKIM/DMARC -> rejected; mailbox
full, too big, limits, system and network errors, expiry -> server_error; our credentials or TLS,
syntax errors, unknown reasons -> others.

Each line is written here from the way common MTAs and providers word the condition (Postfix,
Exim, Sendmail, qmail, Exchange / Office 365, Gmail, Yahoo, Outlook.com, SES, SendGrid ...), so a
rule that only fits the shared samples fails here.
"""

from __future__ import annotations

import pytest

from relay.feedback.classify import BounceClassifier
from relay.rules.reply import ReplyRules, parse_reply
from relay.rules.types import AttemptResult, Category, Outcome, Stage

NE, IP, SP, RJ, SE, OT = (Category.NOT_EXIST, Category.IP_REJECTION, Category.SPAM_REJECTED, Category.REJECTED,
                          Category.SERVER_ERROR, Category.OTHERS)

# (diagnostic, Status: field, SMTP command the reply answered or None, expected category)
CASES: list[tuple[str, str | None, str | None, Category]] = [
    # --- mailbox full (a storage condition of the receiving server) ---------------------------
    ("552 5.2.2 <ann@example.org>... Mailbox quota exceeded", "5.2.2", "RCPT", SE),
    ("452 4.2.2 The recipient's inbox is out of storage space", "4.2.2", "RCPT", SE),
    ("550 Mail box full", None, "RCPT", SE),
    ("552 Requested mail action aborted: exceeded storage allocation", None, "DATA", SE),
    ("452 4.2.2 Mailbox would exceed maximum allowed storage", "4.2.2", "RCPT", SE),
    ("550 user ann is over their storage limit", "5.0.0", None, SE),
    ("554 Inbox is full, message not delivered", None, None, SE),
    ("552 5.2.2 Mailbox quota usage exceeded for this user", "5.2.2", "DATA", SE),
    ("550 Not enough space in the recipient's mailbox", "5.0.0", "RCPT", SE),
    # --- message too big / over a limit ---------------------------------------------------------
    ("552 5.3.4 Maximum message size exceeded", "5.3.4", "DATA", SE),
    ("552 Message exceeds the maximum size allowed by this server", None, "DATA", SE),
    ("554 5.3.4 Message too large for this system", "5.3.4", None, SE),
    ("552 5.2.3 Message length exceeds administrative limit", "5.2.3", "DATA", SE),
    ("550 Your message is larger than the limit of 25 MB", "5.0.0", "DATA", SE),
    # --- user unknown ---------------------------------------------------------------------------
    ("550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown in virtual alias table",
     "5.1.1", "RCPT", NE),
    ("550 No such person at this address", "5.0.0", "RCPT", NE),
    ("550 Addressee unknown, relay=mx.example.org", "5.0.0", "RCPT", NE),
    ("550 5.1.1 The recipient does not exist here", "5.1.1", "RCPT", NE),
    ("553 5.1.1 <bob@example.org>: unknown email address", "5.1.1", "RCPT", NE),
    ("550 Recipient rejected: no mailbox by that name", "5.0.0", "RCPT", NE),
    ("550 5.1.1 bob@example.org: Recipient invalid", "5.1.1", "RCPT", NE),
    ("550 5.1.1 RESOLVER.ADR.RecipNotFound; recipient not found by SMTP address lookup", "5.1.1", "RCPT", NE),
    ("550 Requested action not taken: mailbox unavailable (user does not exist)", "5.0.0", "RCPT", NE),
    ("511 sorry, no mailbox with that name here (#5.1.1)", "5.1.1", "RCPT", NE),
    ("550 5.1.1 That address is not in use here", "5.1.1", None, NE),
    # --- host / domain unknown -------------------------------------------------------------------
    ("Host or domain name not found. Name service error for name=example.invalid type=MX", "5.4.4", None, NE),
    ("550 5.1.2 Recipient address rejected: unknown domain", "5.1.2", "RCPT", NE),
    ("554 Recipient domain does not resolve", "5.0.0", "RCPT", NE),
    ("553 5.1.2 Domain name not found for recipient", "5.1.2", "RCPT", NE),
    ("Name or service not known (example.invalid)", "5.0.0", None, NE),
    # --- moved away ------------------------------------------------------------------------------
    ("551 5.1.6 User has moved; please try bob@example.net", "5.1.6", "RCPT", NE),
    ("550 5.1.6 Recipient no longer on this server", "5.1.6", "RCPT", NE),
    # --- suspended / disabled (exists, refuses) --------------------------------------------------
    ("550 5.2.1 Account is temporarily suspended", "5.2.1", "RCPT", RJ),
    ("550 This account has been disabled or discontinued", "5.0.0", "RCPT", RJ),
    ("550 5.2.1 Mailbox inactive, not accepting messages", "5.2.1", "RCPT", RJ),
    ("554 Recipient account is locked", "5.0.0", "RCPT", RJ),
    # --- blocked: our IP / host ------------------------------------------------------------------
    ("554 5.7.1 Service unavailable; Client host [192.0.2.9] blocked using bl.example.net", "5.7.1", "RCPT",
     IP),
    ("550 5.7.1 Mail from 192.0.2.9 refused, see http://rbl.example.net/", "5.7.1", "RCPT", IP),
    ("554 Your IP address is not allowed to send mail to this server", "5.0.0", "RCPT", IP),
    ("550 Dynamic IP addresses are not accepted here", "5.0.0", "RCPT", IP),
    ("550 5.7.1 Sending IP 192.0.2.9 is on our denylist", "5.7.1", "RCPT", IP),
    ("554 5.7.1 Connection rejected: sending host has a poor reputation", "5.7.1", "RCPT", IP),
    ("550 5.7.25 Sending server has no reverse DNS record", "5.7.25", "RCPT", IP),
    ("550 Access denied - the host 192.0.2.9 is not welcome here", "5.7.1", "CONN", IP),
    # --- policy / filtered / sender refused -------------------------------------------------------
    ("550 5.7.1 Message rejected due to local policy", "5.7.1", "RCPT", RJ),
    ("554 5.7.9 Email not accepted for policy reasons", "5.7.9", "DATA", RJ),
    ("550 5.7.1 Delivery denied by recipient's organisation policy", "5.7.1", "RCPT", RJ),
    ("550 5.7.1 The recipient refuses mail from this sender", "5.7.1", "RCPT", RJ),
    ("553 5.1.8 <news@example.com>: Sender address rejected: Domain not found", "5.1.8", "MAIL", RJ),
    ("550 5.7.1 Sender is not on the recipient's allow list", "5.7.1", "RCPT", RJ),
    ("554 5.7.1 Relay access denied", "5.7.1", "RCPT", RJ),
    ("550 5.7.1 Unable to relay for bob@example.org", "5.7.1", "RCPT", RJ),
    ("556 5.1.10 Recipient address has null MX", "5.1.10", "RCPT", RJ),
    ("550 5.7.26 This message does not pass authentication checks (SPF and DKIM both fail)", "5.7.26",
     "DATA", RJ),
    ("550 5.7.23 The message was rejected because of the SPF policy of the sender domain", "5.7.23",
     "DATA", RJ),
    ("554 5.6.0 Message contains more than one From address", "5.6.0", "DATA", RJ),
    # --- spam / virus / content ------------------------------------------------------------------
    ("554 5.7.1 Message refused: scored too high by the spam filter", "5.7.1", "DATA", SP),
    ("550 5.7.1 Our filters consider this message to be unsolicited bulk email", "5.7.1", "DATA", SP),
    ("554 5.7.0 Rejected: the message contains a virus (Eicar-Test-Signature)", "5.7.0", "DATA", SP),
    ("552 5.7.0 Attachment type not allowed: .exe files are blocked", "5.7.0", "DATA", OT),
    ("550 Message content rejected by the content filter", "5.0.0", "DATA", SP),
    # --- security: our credentials / transport (no verdict on the address) -----------------------
    ("530 5.7.0 Must issue a STARTTLS command first", "5.7.0", "MAIL", OT),
    ("530 5.7.1 Authentication required to send mail", "5.7.1", "RCPT", OT),
    ("535 5.7.8 Authentication credentials invalid", "5.7.8", "MAIL", OT),
    # --- expired in the queue -------------------------------------------------------------------
    ("Message could not be delivered within 5 days: giving up", "4.4.7", None, SE),
    ("retry time not reached for any host for a long time, message expired", "4.4.7", None, SE),
    ("Delivery failed after repeated attempts over 72 hours", "4.4.7", None, SE),
    ("451 4.4.1 No answer from host (connection timed out)", "4.4.1", None, SE),
    # --- system / network errors of the receiving side ------------------------------------------
    ("451 4.3.0 Mail server temporarily rejected message due to an internal problem", "4.3.0", "DATA", SE),
    ("554 5.3.5 System configuration error on the destination host", "5.3.5", "RCPT", SE),
    ("550 5.4.6 Routing loop detected: message looped back", "5.4.6", None, SE),
    ("451 Temporary local problem - please try later", "4.3.0", "RCPT", SE),
    ("554 5.4.0 Mail system error while delivering the message", "5.4.0", None, SE),
    ("421 4.3.2 Service shutting down, closing transmission channel", "4.3.2", None, RJ),  # X.3.2: not accepting
    # --- too many connections / rate ---------------------------------------------------------------
    ("421 4.7.0 Too many concurrent SMTP connections from your IP; please try again later", "4.7.0",
     "CONN", SE),
    ("450 4.7.1 You are sending messages too fast; slow down", "4.7.1", "RCPT", SE),
    # --- MTA-local notices (Exim, qmail, Sendmail, Postfix, Exchange wording) ----------------------
    ("all relevant MX records point to non-existent hosts", "5.0.0", None, NE),
    ("all host address lookups failed permanently", "5.0.0", None, NE),
    ("The email address you entered couldn't be found. Please check the recipient's address", "5.0.0", None,
     NE),
    ("an MX or SRV record indicated no SMTP service", "5.0.0", None, RJ),
    ("local delivery failed", "5.0.0", None, SE),
    ("Unable to contact LDAP server (#4.4.3)", "4.4.3", None, SE),
    ("all hosts for example.org have been failing for a long time and were last tried after this message "
     "arrived", "4.0.0", None, SE),
    ("lost connection with mx.example.org[192.0.2.5] while receiving the initial server greeting", "4.4.2",
     None, SE),
    ("conversation with mx.example.org[192.0.2.5] timed out while sending end of data", "4.4.2", None, SE),
    ("Cannot send message for 3 days", "4.4.7", None, SE),
    ("Although I'm listed as a best-preference MX or A for that host, it isn't in my control/locals file, "
     "so I don't treat it as local", "5.4.6", None, SE),
    ("Connected to 192.0.2.5 but sender was rejected. Remote host said: 553 sorry, your envelope sender "
     "is not allowed", "5.0.0", "MAIL", RJ),
    # --- provider codes (documented by the providers; the wording around them is generic) ----------
    ("554 5.7.1 Connection refused for policy reasons. AUP#CXBL", "5.7.1", "CONN", IP),
    ("550 5.7.1 Message rejected. AUP#URLBL1001", "5.7.1", "DATA", SP),
    ("550 5.7.0 Message refused. AUP#CXSNDR", "5.7.0", "MAIL", RJ),
    ("421 mwinf0000 ME Trop de connexions, veuillez verifier votre configuration. OFR005_104 [104]", "4.0.0",
     "CONN", SE),
    ("550 5.1.1 Adresse d au moins un destinataire invalide. Invalid recipient. OFR_416 [416]", "5.1.1", "RCPT",
     NE),
    ("552 5.1.1 Boite du destinataire pleine. Recipient overquota. OFR_417 [417]", "5.1.1", "RCPT", SE),
    ("550 5.5.0 Le compte du destinataire est archive. LPN007_420", "5.5.0", "RCPT", RJ),
    ("554 Connection refused. This IP has a poor reputation. IB103", "5.0.0", "CONN", IP),
    ("550 This IP has sent too many messages this hour. IB504", "5.0.0", "MAIL", SE),
    ("552 Message rejected for content judged to be spam. IB212", "5.0.0", "DATA", SP),
    # --- more wording families ---------------------------------------------------------------------
    ("550 5.2.1 The mailbox you are trying to reach is no longer active", "5.2.1", "RCPT", RJ),
    ("550 Recipient rejected: temporarily inactive", "5.0.0", "RCPT", RJ),
    ("550 This domain does not accept any mail", "5.0.0", "RCPT", RJ),
    ("550 5.7.1 Relaying not allowed for this destination", "5.7.1", "RCPT", RJ),
    ("550 We do not relay for example.org", "5.0.0", "RCPT", RJ),
    ("Command died with status 1: \"/usr/bin/deliver-filter\"", "5.3.0", None, SE),
    ("554 5.7.1 Message contains a blocked URL", "5.7.1", "DATA", SP),
    ("Amazon SES did not send the message to this address because it is on the suppression list for "
     "your account", "5.1.1", None, OT),
    # --- Exchange / Office 365 wording (Microsoft's NDR reference) ---------------------------------
    ("550 5.7.1 Delivery not authorized, message refused", "5.7.1", "RCPT", RJ),
    ("550 5.7.133 RESOLVER.RST.SenderNotAuthenticatedForGroup; sender not authenticated for group",
     "5.7.133", "RCPT", RJ),
    ("550 5.7.124 Sender not in allowed-senders list", "5.7.124", "RCPT", RJ),
    ("550 5.7.506 Access denied, bad HELO", "5.7.506", "RCPT", IP),
    ("550 5.7.507 Access denied, rejected by recipient", "5.7.507", "RCPT", IP),
    ("550 5.7.510 Access denied, example.org does not accept email over IPv6", "5.7.510", "RCPT", IP),
    ("550 5.7.513 Service unavailable, Client host [192.0.2.9] blocked by example.org using Customer Block "
     "list", "5.7.513", "RCPT", IP),
    ("550 5.7.509 Access denied, sending domain example.com does not pass DMARC verification", "5.7.509",
     "DATA", RJ),
    ("550 5.7.23 The message was rejected because of Sender Policy Framework violation", "5.7.23", "DATA", RJ),
    ("550 5.4.310 DNS domain 'example.invalid' does not exist", "5.4.310", None, NE),
    ("451 4.4.312 DNS query failed", "4.4.312", None, SE),
    ("451 4.4.317 Cannot connect to remote server: STARTTLS is required to send mail", "4.4.317", None, OT),
    ("550 5.7.322 certificate-expired: the destination certificate has expired", "5.7.322", None, OT),
    # --- Gmail, AOL and an address status that outranks a filter phrase ---------------------------
    ("552-5.7.0 Our system detected an illegal attachment on your message", "5.7.0", "DATA", RJ),
    ("550-5.7.1 The user or domain that you are sending to (or from) has a policy that prohibited the mail "
     "that you sent", "5.7.1", "DATA", RJ),
    ("421 4.7.1 : (DYN:T1) http://postmaster.example.com/errors/421dynt1.html", "4.7.1", "CONN", IP),
    ("550 5.4.5 Daily user sending limit exceeded", "5.4.5", "DATA", SE),
    ("550 5.1.1 <bob@example.org>: mailbox unavailable, user refuses mail", "5.1.1", "RCPT", NE),
    # --- "service unavailable": the code says which way -------------------------------------------
    ("554 5.0.0 Service unavailable", "5.0.0", None, OT),
    ("421 Service unavailable, closing channel", "4.0.0", None, SE),
    ("554 Service temporarily unavailable", "5.0.0", "RCPT", SE),
    # --- more of the common families --------------------------------------------------------------
    ("552 Too much mail data in this mailbox", "5.0.0", "DATA", SE),
    ("550 5.2.1 User account is currently suspended", "5.2.1", "RCPT", RJ),
    ("Message expired after 48 hours: unable to reach the destination", "4.4.7", None, SE),
    ("This message has been in the mail queue too long and will be returned", "4.4.7", None, SE),
    ("550 5.1.1 Sorry, that address does not exist on this system", "5.1.1", "RCPT", NE),
    ("550 Invalid mailbox: bob@example.org", "5.0.0", "RCPT", NE),
    ("554 5.7.1 Your message was rejected: it looks like bulk mail", "5.7.1", "DATA", SP),
    ("550 Rejected: your IP is listed at dnsbl.example.net", "5.7.1", "CONN", IP),
    ("550 5.1.1 bob@example.org: user not known here", "5.1.1", "RCPT", NE),
    ("550 Nonexistent user <bob@example.org>", "5.0.0", "RCPT", NE),
    ("550 This address no longer accepts mail", "5.0.0", "RCPT", NE),
    ("554 5.7.1 Message rejected: suspected phishing", "5.7.1", "DATA", SP),
    # --- a bare refusal word says less than a status that names the cause ---------------------------
    ("550 5.1.1 <bob@example.org>: Recipient address rejected: Access denied", "5.1.1", "RCPT", NE),
    ("552 5.2.2 Delivery not allowed to this mailbox", "5.2.2", "RCPT", SE),
    ("550 5.7.1 Access denied", "5.7.1", "RCPT", OT),
    ("550 Access denied", "5.0.0", "RCPT", RJ),
    # --- syntax / protocol (no verdict) -----------------------------------------------------------
    ("501 5.1.3 Bad recipient address syntax", "5.1.3", "RCPT", NE),  # X.1.3: cannot receive mail
    ("500 5.5.1 Command unrecognized", "5.5.1", "DATA", OT),
]


@pytest.fixture(scope="module")
def classifier() -> BounceClassifier:
    return BounceClassifier.load()


@pytest.mark.parametrize(("text", "status", "command", "category"), CASES,
                         ids=[f"{c[3].value}:{c[0][:48]}" for c in CASES])
def test_family_wording(classifier: BounceClassifier, text: str, status: str | None, command: str | None,
                        category: Category) -> None:
    code, _ = parse_reply(text)
    action = "delayed" if (status or "").startswith("4") and command is None else "failed"
    verdict = classifier.classify(text, code, status, action, command)
    assert verdict.category is category, verdict.rule


@pytest.mark.parametrize("text", [
    "No such person at this address",
    "Addressee unknown",
    "<bob@example.org>: unknown email address",
    "Recipient rejected: no mailbox by that name",
])
def test_live_reply_user_unknown_wording_enters_the_bounce_list(text: str) -> None:
    # The same wording answered live to RCPT TO (the shared reply rules): a permanent not_exist
    # that puts the address on the bounce list.
    verdict = ReplyRules.load().classify(AttemptResult(Stage.RCPT, 550, None, text))
    assert (verdict.outcome, verdict.category, verdict.adds_bounce) == (Outcome.PERMFAIL, Category.NOT_EXIST, True)


@pytest.mark.parametrize(("text", "status", "category"), [
    ("host mx.antispam.example.net[192.0.2.1] said: 550 5.1.1 <bob@example.org>: Recipient address rejected: "
     "User unknown (in reply to RCPT TO command)", "5.1.1", NE),
    ("SMTP error from remote mail server after RCPT TO:<bob@example.org>: host barracuda.example.org "
     "[192.0.2.1]: 550 No such user here", "5.0.0", NE),
    ("host virusgw.example.org[192.0.2.1] said: 552 5.2.2 Mailbox full", "5.2.2", SE),
    ("... while talking to spamfilter.example.org.: >>> RCPT To:<bob@example.org> <<< 550 5.1.1 "
     "<bob@example.org>... User unknown", "5.1.1", NE),
    # nor is a recipient's chosen name
    ("550 5.1.1 <nospam@example.org>: Recipient address rejected: User unknown in local recipient table",
     "5.1.1", NE),
    ("550 <virus-reports@example.org>: Recipient address rejected: User unknown", "5.1.1", NE),
    ("550 5.1.1 <blocked.user@example.org>... User unknown", "5.1.1", NE),
    # a list named in the reply is still read
    ("554 5.7.1 Service unavailable; Client host [192.0.2.9] blocked using zen.spamhaus.org", "5.7.1", IP),
])
def test_host_and_mailbox_names_are_not_read_as_a_reason(classifier: BounceClassifier, text: str, status: str,
                                                      category: Category) -> None:
    # A filter appliance's host name ("antispam", "barracuda", "virusgw") carries the words the spam,
    # blocklist and virus families look for; the MTA's frame that names it is not a reason.
    assert classifier.classify(text, None, status, "failed", "RCPT").category is category
