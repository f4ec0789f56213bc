"""The SMTP verbs of :class:`relay.smtp.engine.HardenedSMTP` (a mixin, to keep modules small).

Each ``smtp_<VERB>(arg)`` gets the argument text (stripped; None when absent), checks sequencing
and syntax itself, and asks the handler where a decision is needed. Replies are queued with
``_reply`` (flushed per pipelined group by the wire layer); replies caused by client misuse go
through ``_error``, which counts them toward ``max_protocol_errors``. Handler replies are passed
through untouched and never counted. Nothing here logs command arguments (AUTH secrets).
"""

from __future__ import annotations

import binascii
import logging
import re
import ssl
from base64 import b64decode
from typing import TYPE_CHECKING, cast

from relay.smtp.wire import AUTH_LINE_LIMIT, SessionEnd, SmtpWire

if TYPE_CHECKING:
    from relay.smtp.engine import ListenerOptions, SessionInfo, SmtpHandler

log = logging.getLogger("relay.smtp.engine")

_CTL = re.compile(r"[\x00-\x1f\x7f]")
_PARAM = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]*)(?:=([^=\s\x00-\x1f\x7f]+))?\Z")
_MAIL_PARAMS = frozenset({"SIZE", "BODY", "SMTPUTF8", "AUTH"})
# Fast path for the common "dot-atom@domain" mailbox (RFC 5321 §4.1.2; RFC 6531 adds UTF-8).
# Anything else (quoted local part, address literal, source route, no domain) goes through
# aiosmtpd's _getaddr, which is exact but slow (it builds email header parse trees and even
# defines a Protocol class per call).
_U = "\u0080-\U0010ffff"
_ATOM = rf"[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~{_U}-]+"
_LABEL = rf"[A-Za-z0-9{_U}](?:[A-Za-z0-9{_U}-]*[A-Za-z0-9{_U}])?"
_SIMPLE_MAILBOX = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*\Z")

R_OK = "250 2.0.0 Ok"
R_NEED_HELO = "503 5.5.1 Error: send HELO/EHLO first"
R_NEED_MAIL = "503 5.5.1 Error: need MAIL command"
R_NEED_RCPT = "503 5.5.1 Error: need RCPT command"
R_NESTED_MAIL = "503 5.5.1 Error: nested MAIL command"
R_AUTH_REQUIRED = "530 5.7.0 Authentication required"
R_ENCRYPTION_REQUIRED = "538 5.7.11 Encryption required for requested authentication mechanism"
R_TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"
R_BARE = "550 5.6.0 Message contains bare CR or LF characters"
R_TOO_MANY_RCPTS = "452 4.5.3 Too many recipients"
R_NEEDS_UTF8 = "553 5.6.7 Non-ASCII address requires SMTPUTF8"
R_INTERNAL = "451 4.3.0 Internal error"
R_LINE_TOO_LONG = "500 5.5.2 Line too long"


class TooManyErrors(SessionEnd):
    """max_protocol_errors exceeded: 421 4.7.0 and close."""


class CloseSession(SessionEnd):
    """Close after flushing the queued replies (QUIT, on_connect refusal, AuthReply.close)."""


def set_tls_info(info: SessionInfo, sslobj: object) -> None:
    info.tls = True
    if sslobj is None:
        return
    so = cast(ssl.SSLObject, sslobj)
    info.tls_version = so.version()
    cipher = so.cipher()
    info.tls_cipher = cipher[0] if cipher else None


def _closing_bracket(text: str) -> int:
    """Index of the ``>`` closing ``text[0] == "<"``, honouring quoted strings; -1 if none."""
    quoted = False
    i, n = 1, len(text)
    while i < n:
        c = text[i]
        if quoted and c == "\\":
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c == ">" and not quoted:
            return i
        i += 1
    return -1


def split_path(text: str) -> tuple[str, str] | None:
    """``"<path> params"`` -> ``(path, params)``; a bare address is tolerated. None: bad syntax."""
    if text.startswith("<"):
        gt = _closing_bracket(text) if '"' in text else text.find(">")
        if gt < 0:
            return None
        rest = text[gt + 1:]
        if rest and rest[0] != " ":
            return None
        return text[1:gt], rest.strip()
    path, _, rest = text.partition(" ")
    if not path or "<" in path or ">" in path:
        return None
    return path, rest.strip()


def parse_params(text: str) -> dict[str, str | bool] | None:
    """ESMTP parameters (RFC 5321 §4.1.2): keywords upper-cased, values kept. None: bad syntax."""
    params: dict[str, str | bool] = {}
    if not text:
        return params
    for item in text.split(" "):
        if not item:
            continue
        m = _PARAM.match(item)
        if m is None:
            return None
        value = m.group(2)
        params[m.group(1).upper()] = True if value is None else value
    return params


class VerbsMixin(SmtpWire):
    session_info: SessionInfo
    handler: SmtpHandler
    options: ListenerOptions
    _mail_open: bool
    _rcpts: int

    # region helpers
    def _error(self, reply: str) -> None:
        """Reply to client misuse; the (max_protocol_errors+1)-th one ends the session."""
        info = self.session_info
        info.protocol_errors += 1
        if info.protocol_errors > self.options.max_protocol_errors:
            raise TooManyErrors
        self._reply(reply)

    def _handler_reply(self, reply: str) -> None:
        """Queue a handler's reply; a 421 from the handler also closes the session."""
        self._reply(reply)
        if reply[:3] == "421":
            raise CloseSession

    async def _call_reset(self) -> None:
        try:
            await self.handler.on_reset(self.session_info)
        except Exception:
            log.exception("%s: on_reset failed", self.options.name)

    async def _end_transaction(self) -> None:
        """End an open transaction that did not complete DATA (on_reset)."""
        self._rcpts = 0
        self.session_info.smtputf8 = False
        if self._mail_open:
            self._mail_open = False
            await self._call_reset()

    def _helo_arg(self, arg: str | None, verb: str) -> str | None:
        if arg is None:
            self._error(f"501 5.5.4 Syntax: {verb} hostname")
            return None
        if _CTL.search(arg):
            self._error("501 5.5.4 Invalid hostname")
            return None
        return arg.split(" ", 1)[0]

    def _parse_address(self, text: str, null_ok: bool,
                       keep_raw: bool = False) -> tuple[str, dict[str, str | bool]] | None:
        """The path of MAIL/RCPT and its parameters, or None after replying with the error.

        ``keep_raw`` (RCPT): a path that is not a plain mailbox is passed on as written (unless it
        carries a source route), so the policy chain's syntax check answers ``Format Error`` and
        records the recipient as invalid, instead of this layer quoting or refusing it silently."""
        split = split_path(text)
        if split is None:
            self._error("501 5.5.4 Syntax error in address")
            return None
        path, rest = split
        if _CTL.search(path):
            self._error("553 5.1.3 Invalid characters in address")
            return None
        params = parse_params(rest)
        if params is None:
            self._error("501 5.5.4 Syntax error in parameters")
            return None
        if not path:
            if null_ok:
                return "", params
            self._error("553 5.1.3 Null address not allowed")
            return None
        if _SIMPLE_MAILBOX.match(path) or (keep_raw and not path.startswith("@")):
            return path, params
        addr, leftover = self._getaddr("<" + path + ">")
        if not addr or leftover or addr == "<>":
            self._error("553 5.1.3 Invalid address syntax")
            return None
        return addr, params

    def _ehlo_text(self) -> str:
        o, info = self.options, self.session_info
        kw = [o.hostname, "PIPELINING", f"SIZE {o.max_message_size}" if o.max_message_size else "SIZE",
              "8BITMIME"]
        if o.enable_smtputf8:
            kw.append("SMTPUTF8")
        kw.append("ENHANCEDSTATUSCODES")
        if o.tls_context is not None and not info.tls:
            kw.append("STARTTLS")
        if o.auth_enabled and (info.tls or not o.auth_requires_tls):
            kw.append("AUTH PLAIN LOGIN")
        return "".join(f"250-{k}\r\n" for k in kw[:-1]) + f"250 {kw[-1]}"

    # endregion

    # region session verbs
    async def smtp_EHLO(self, arg: str | None) -> None:
        host = self._helo_arg(arg, "EHLO")
        if host is None:
            return
        await self._end_transaction()
        self.session_info.helo = host
        self.session_info.esmtp = True
        self._reply(self._ehlo_text())

    async def smtp_HELO(self, arg: str | None) -> None:
        host = self._helo_arg(arg, "HELO")
        if host is None:
            return
        await self._end_transaction()
        self.session_info.helo = host
        self.session_info.esmtp = False
        self._reply(f"250 {self.options.hostname}")

    async def smtp_NOOP(self, arg: str | None) -> None:
        self._reply(R_OK)

    async def smtp_HELP(self, arg: str | None) -> None:
        self._reply("214 2.0.0 Commands: AUTH DATA EHLO HELO HELP MAIL NOOP QUIT RCPT RSET STARTTLS VRFY")

    async def smtp_VRFY(self, arg: str | None) -> None:
        if arg is None:
            return self._error("501 5.5.4 Syntax: VRFY <address>")
        self._reply("252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery")

    async def smtp_EXPN(self, arg: str | None) -> None:
        self._reply("502 5.5.1 EXPN not available")

    async def smtp_RSET(self, arg: str | None) -> None:
        if arg is not None:
            return self._error("501 5.5.4 Syntax: RSET")
        self._mail_open = False
        self._rcpts = 0
        self.session_info.smtputf8 = False
        await self._call_reset()
        self._reply(R_OK)

    async def smtp_QUIT(self, arg: str | None) -> None:
        self._reply("221 2.0.0 Bye")
        raise CloseSession

    async def smtp_STARTTLS(self, arg: str | None) -> None:
        info, ctx = self.session_info, self.options.tls_context
        if ctx is None:
            return self._error("502 5.5.1 Error: command not implemented")
        if info.tls:
            return self._error("503 5.5.1 Error: TLS already active")
        if arg is not None:
            return self._error("501 5.5.4 Syntax: STARTTLS")
        if info.helo is None:
            return self._error(R_NEED_HELO)
        self._reply("220 2.0.0 Ready to start TLS")
        # RFC 3207 §4.2: forget everything learnt in the clear (on_reset even without a transaction).
        self._mail_open = False
        self._rcpts = 0
        info.smtputf8 = False
        await self._call_reset()
        info.helo = None
        info.esmtp = False
        info.principal = None
        info.authenticated = False
        await self._start_tls(ctx, min(self.options.command_timeout, 60.0))
        assert self._tr is not None
        set_tls_info(info, self._tr.get_extra_info("ssl_object"))

    # endregion

    # region AUTH (RFC 4954): PLAIN and LOGIN
    async def smtp_AUTH(self, arg: str | None) -> None:
        o, info = self.options, self.session_info
        if not o.auth_enabled:
            return self._error("503 5.5.1 Error: authentication not enabled")
        if not info.esmtp:
            return self._error("503 5.5.1 Error: send EHLO first")
        if o.auth_requires_tls and not info.tls:
            return self._error(R_ENCRYPTION_REQUIRED)
        if info.authenticated:
            return self._error("503 5.5.1 Error: already authenticated")
        if self._mail_open:
            return self._error("503 5.5.1 Error: MAIL transaction in progress")
        parts = arg.split() if arg else []
        if not 1 <= len(parts) <= 2:
            return self._error("501 5.5.4 Syntax: AUTH mechanism [initial-response]")
        mech = parts[0].upper()
        initial = parts[1] if len(parts) == 2 else None
        if mech == "PLAIN":
            raw = await self._sasl_response(initial, "")
            if raw is None:
                return
            fields = raw.split(b"\x00")
            if len(fields) != 3 or not fields[1]:
                return self._error("501 5.5.2 Invalid PLAIN response")
            authzid, login, password = fields
            if authzid and authzid != login:  # no proxy authorisation
                self._reply("535 5.7.8 Authentication credentials invalid")
                return
        elif mech == "LOGIN":
            user = await self._sasl_response(initial, "VXNlcm5hbWU6")  # "Username:"
            if user is None:
                return
            secret = await self._sasl_response(None, "UGFzc3dvcmQ6")  # "Password:"
            if secret is None:
                return
            login, password = user, secret
        else:
            return self._error("504 5.5.4 Unrecognized authentication type")
        result = await self.handler.authenticate(info, mech, login, password)
        if result.ok:
            info.authenticated = True
            info.principal = result.principal
        self._handler_reply(result.reply)
        if result.close:
            raise CloseSession

    async def _sasl_response(self, initial: str | None, challenge: str) -> bytes | None:
        """Decoded client response (from the AUTH line, or after a 334 challenge); None if the
        exchange ended (cancelled or malformed; the reply is queued)."""
        if initial is None:
            self._reply(f"334 {challenge}")
            line = await self._read_line(AUTH_LINE_LIMIT, self.loop.time() + self.options.command_timeout)
            if line is None:
                self._error(R_LINE_TOO_LONG)
                return None
            if not line.endswith(b"\r\n") or b"\r" in line[:-2] or b"\x00" in line:
                self._error("501 5.5.2 Syntax error in response")
                return None
            text = line[:-2].strip()
        else:
            if initial == "=":  # RFC 4954: empty initial response
                return b""
            text = initial.encode("utf-8")
        if text == b"*":
            self._reply("501 5.7.0 Authentication cancelled")
            return None
        try:
            return b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            self._error("501 5.5.2 Cannot decode response")
            return None

    # endregion

    # region mail transaction
    async def smtp_MAIL(self, arg: str | None) -> None:
        o, info = self.options, self.session_info
        if info.helo is None:
            return self._error(R_NEED_HELO)
        if o.require_auth and not info.authenticated:
            return self._error(R_AUTH_REQUIRED)
        if self._mail_open:
            return self._error(R_NESTED_MAIL)
        text = self._strip_command_keyword("FROM:", arg) if arg else None
        if text is None:
            return self._error("501 5.5.4 Syntax: MAIL FROM:<address>")
        parsed = self._parse_address(text, null_ok=True)
        if parsed is None:
            return
        sender, params = parsed
        if params and not info.esmtp:
            return self._error("555 5.5.4 MAIL parameters require EHLO")
        for key in params:
            if key not in _MAIL_PARAMS:
                return self._error(f"555 5.5.4 Unsupported parameter {key}")
        size = params.get("SIZE")
        if size is not None:
            if not isinstance(size, str) or not (size.isascii() and size.isdigit()):
                return self._error("501 5.5.4 Syntax error in SIZE")
            if o.max_message_size and int(size) > o.max_message_size:
                self._reply(R_TOO_BIG)
                return
        body = params.get("BODY")
        if body is not None:
            if not isinstance(body, str) or body.upper() not in ("7BIT", "8BITMIME"):
                return self._error("501 5.5.4 Unsupported BODY type")
            params["BODY"] = body.upper()
        utf8 = params.get("SMTPUTF8")
        if utf8 is not None:
            if utf8 is not True:
                return self._error("501 5.5.4 SMTPUTF8 takes no value")
            if not o.enable_smtputf8:
                return self._error("555 5.5.4 SMTPUTF8 not supported")
        if not sender.isascii() and utf8 is None:
            return self._error(R_NEEDS_UTF8)
        reply = await self.handler.on_mail(info, sender, params)
        self._handler_reply(reply)
        if reply[:1] == "2":
            self._mail_open = True
            self._rcpts = 0
            info.smtputf8 = utf8 is True

    async def smtp_RCPT(self, arg: str | None) -> None:
        info = self.session_info
        if info.helo is None:
            return self._error(R_NEED_HELO)
        if not self._mail_open:
            return self._error(R_NEED_MAIL)
        text = self._strip_command_keyword("TO:", arg) if arg else None
        if text is None:
            return self._error("501 5.5.4 Syntax: RCPT TO:<address>")
        parsed = self._parse_address(text, null_ok=False, keep_raw=True)
        if parsed is None:
            return
        recipient, params = parsed
        if params:
            return self._error(f"555 5.5.4 Unsupported parameter {next(iter(params))}")
        if not recipient.isascii() and not info.smtputf8:
            return self._error(R_NEEDS_UTF8)
        if self._rcpts >= self.options.max_recipients:
            self._reply(R_TOO_MANY_RCPTS)
            return
        reply = await self.handler.on_rcpt(info, recipient, params)
        self._handler_reply(reply)
        if reply[:1] == "2":
            self._rcpts += 1

    # endregion
