DROP FUNCTION reports.enter_scope_with_key(uuid, text);
