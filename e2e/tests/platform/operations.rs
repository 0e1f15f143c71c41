//! What operators run: the deploy/ files checked with real tools, metrics every alert rule and
//! dashboard names exist on a running stack, traces end to end (issue 19).
