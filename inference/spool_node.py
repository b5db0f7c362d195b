"""The node that holds a spool's result documents, named once in the spool itself (``spool/node-id``).

An ``outgoing_results`` row names the node whose ``spool/outgoing`` holds its files, and a dispatcher sends
only the rows of its own spool's node. The name is kept in the spool rather than read from each process's
settings, so that every process and machine reading one spool (the ingest node, workers with that spool
mounted) sends the same rows, and a spool moved to another machine keeps its rows.
"""

from __future__ import annotations

import logging
import os
import socket

from inference.spool import fsync_dir, fsync_file
from service.settings import Settings

__all__ = ["NODE_FILE", "default_node_id", "spool_node", "sends_unnamed_rows"]

log = logging.getLogger(__name__)

NODE_FILE = "node-id"


def default_node_id(settings: Settings) -> str:
    """``<hostname>:<MEDSCREEN_HOME>``: two homes on one machine are two nodes."""
    return f"{socket.gethostname()}:{settings.home.resolve()}"


def _name_spool(settings: Settings, name: str) -> str:
    """Write the spool's name unless another process named it first; returns the name it has."""
    directory = settings.spool_dir
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / NODE_FILE
    temporary = directory / f".{NODE_FILE}.{os.getpid()}"
    temporary.write_text(name + "\n", encoding="utf-8")
    fsync_file(temporary)
    try:
        # link() never replaces an existing name: of two processes starting at once, the first one names it.
        os.link(temporary, target)
        fsync_dir(directory)
    except FileExistsError:
        pass
    finally:
        temporary.unlink(missing_ok=True)
    return target.read_text(encoding="utf-8").strip()


def spool_node(settings: Settings) -> str:
    """The name of the node holding this spool's result documents, naming the spool at its first use."""
    path = settings.spool_dir / NODE_FILE
    try:
        named = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        named = ""
    if not named:
        named = _name_spool(settings, settings.node_id or default_node_id(settings))
    if settings.node_id and settings.node_id != named:
        log.warning(
            "MEDSCREEN_NODE_ID is %r but the spool %s is already node %r: results stored there keep that name",
            settings.node_id, settings.spool_dir, named,
        )
    return named


def sends_unnamed_rows(settings: Settings) -> bool:
    """Whether this node sends rows that name no node (made before nodes were recorded).

    Those were all built in the ingest node's spool (a fetching worker could not write back then), so the
    nodes that read that spool send them: the ingest node and workers with it mounted, not fetching workers.
    """
    return not settings.ingest_url
