"""SqlStorage: the Storage aggregate over one Executor (either backend)."""

from __future__ import annotations

from storage import migrate as _migrate
from storage.errors import SchemaBehind
from storage.executor import Executor
from storage.paging import DEFAULT_COUNT_CAP
from storage.protocols import (
    AccountRepo,
    DkimRepo,
    ExportRepo,
    FeedbackRepo,
    LabelRepo,
    SchemaState,
    SendRequestRepo,
    StatsRepo,
    StatusRepo,
    SuppressionRepo,
    UnclassifiedRepo,
    WebhookRepo,
)
from storage.repos import (
    SqlAccountRepo,
    SqlDkimRepo,
    SqlExportRepo,
    SqlFeedbackRepo,
    SqlLabelRepo,
    SqlSendRequestRepo,
    SqlSuppressionRepo,
)
from storage.status_repos import SqlStatsRepo, SqlStatusRepo
from storage.unclassified import SqlUnclassifiedRepo
from storage.webhooks import SqlWebhookRepo


class SqlStorage:
    """Implements ``storage.protocols.Storage``. Build it with ``storage.open_storage(url)``."""

    def __init__(self, url: str, executor: Executor, *, count_cap: int | None = DEFAULT_COUNT_CAP) -> None:
        self.url = url
        self.executor = executor
        self.dialect = executor.dialect
        self.accounts: AccountRepo = SqlAccountRepo(executor)
        self.labels: LabelRepo = SqlLabelRepo(executor)
        self.send_requests: SendRequestRepo = SqlSendRequestRepo(executor)
        self.stats: StatsRepo = SqlStatsRepo(executor)
        self.suppressions: SuppressionRepo = SqlSuppressionRepo(executor, count_cap)
        self.statuses: StatusRepo = SqlStatusRepo(executor, count_cap)
        self.feedback: FeedbackRepo = SqlFeedbackRepo(executor)
        self.exports: ExportRepo = SqlExportRepo(executor)
        self.dkim: DkimRepo = SqlDkimRepo(executor)
        self.webhooks: WebhookRepo = SqlWebhookRepo(executor)
        self.unclassified: UnclassifiedRepo = SqlUnclassifiedRepo(executor)

    async def schema_state(self) -> SchemaState:
        return await _migrate.schema_state(self.executor)

    async def ping(self) -> None:
        await self.executor.fetchval("health.ping")

    async def migrate(self) -> list[int]:
        return await _migrate.migrate(self.executor)

    async def require_current_schema(self) -> SchemaState:
        """For `serve`: raise SchemaBehind unless every shipped migration is applied."""
        state = await self.schema_state()
        if state.behind:
            raise SchemaBehind(
                f"database schema is at version {state.current}, this program needs {state.latest}; "
                "run `mailrelay db migrate`"
            )
        return state

    async def close(self) -> None:
        await self.executor.close()
