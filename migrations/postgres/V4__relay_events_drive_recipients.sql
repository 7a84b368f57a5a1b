-- Where delivery status notifications go: the envelope sender as the app
-- submitted it (or the staff member), '' for none; NULL in rows from before,
-- which fall back to the relayed sender.
ALTER TABLE messages ADD COLUMN dsn_to text;

-- The relay's events move a recipient on after the hand-over: sent
-- (confirmed), complained (spam complaint), bounced or blocked.
ALTER TABLE recipients DROP CONSTRAINT recipients_state_check;
ALTER TABLE recipients ADD CONSTRAINT recipients_state_check
    CHECK (state IN ('pending', 'delivered', 'failed', 'sent', 'complained', 'bounced', 'blocked'));
