-- The first round trip of a create: the transaction's scope (what `enter_scope` sets) and the
-- caller's wrapped data key, read under that scope, in one statement where they took two.
-- PL/pgSQL runs its statements in order, so the key is read with the scope already set;
-- SECURITY INVOKER (the default, written out) keeps `data_keys`' row-level security the
-- caller's: another user's id reads nothing. No SET clause: it would confine the settings to the
-- function, and they must last until the transaction ends.
CREATE FUNCTION reports.enter_scope_with_key(p_user uuid, p_role text)
RETURNS TABLE (key_id text, wrapped bytea)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
BEGIN
    PERFORM set_config('app.current_user_id', p_user::text, true), set_config('app.role', p_role, true);
    RETURN QUERY SELECT k.key_id, k.wrapped FROM reports.data_keys AS k WHERE k.user_id = p_user;
END
$$;
