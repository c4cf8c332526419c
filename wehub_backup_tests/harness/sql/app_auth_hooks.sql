-- What nearly every Supabase app adds to Supabase's own tables: a profile for each new user, a
-- bucket, and file rules that call the app's own membership check and read its tables.
CREATE FUNCTION public.handle_new_user() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  INSERT INTO public.profiles (user_id, username) VALUES (NEW.id, 'new_' || replace(NEW.id::text, '-', ''));
  RETURN NEW;
END $$;
CREATE TRIGGER on_auth_user_created AFTER INSERT ON auth.users
  FOR EACH ROW EXECUTE FUNCTION public.handle_new_user();
CREATE FUNCTION public.is_member(org uuid) RETURNS boolean LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  SELECT EXISTS (SELECT 1 FROM public.memberships m WHERE m.org_id = org AND m.user_id = auth.uid())
$$;
INSERT INTO storage.buckets (id, name, public, created_at, updated_at)
VALUES ('org-files', 'org-files', false, timestamptz '2024-02-01 00:00+00', timestamptz '2024-02-01 00:00+00');
CREATE POLICY "Members read their organization's files" ON storage.objects FOR SELECT TO authenticated
  USING (bucket_id = 'org-files' AND public.is_member(((storage.foldername(name))[1])::uuid));
CREATE POLICY "Admins upload organization files" ON storage.objects AS RESTRICTIVE FOR INSERT TO authenticated
  WITH CHECK (bucket_id = 'org-files' AND EXISTS (
    SELECT 1 FROM public.memberships m WHERE m.user_id = auth.uid() AND m.role IN ('owner', 'admin')));
COMMENT ON POLICY "Admins upload organization files" ON storage.objects IS 'Only owners and admins add files';
