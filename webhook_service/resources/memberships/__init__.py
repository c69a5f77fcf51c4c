"""Clerk organization memberships, mirrored into the app's memberships collection when the
organization map declares them (its ``[memberships]`` table): one document per
organization and user, whatever order Clerk's events arrive in."""
