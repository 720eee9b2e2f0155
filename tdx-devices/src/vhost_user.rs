//! vhost-user-blk frontend (in progress).
