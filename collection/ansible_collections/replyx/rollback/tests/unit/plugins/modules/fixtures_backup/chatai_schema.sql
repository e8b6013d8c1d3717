--
-- Name: dialogs_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: postgres
--

ALTER SEQUENCE public.dialogs_id_seq OWNED BY public.dialogs.id;

--
-- Name: users_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: postgres
--

ALTER SEQUENCE public.users_id_seq OWNED BY public.users.id;

--
-- Name: ix_dialog_messages_dialog_id; Type: INDEX; Schema: public; Owner: postgres
--

CREATE INDEX ix_dialog_messages_dialog_id ON public.dialog_messages USING btree (dialog_id);

--
-- Name: ix_dialogs_started; Type: INDEX; Schema: public; Owner: postgres
--

CREATE INDEX ix_dialogs_started ON public.dialogs USING btree (started_at);

--
-- Name: dialog_messages dialog_messages_dialog_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.dialog_messages
    ADD CONSTRAINT dialog_messages_dialog_id_fkey FOREIGN KEY (dialog_id) REFERENCES public.dialogs(id) ON DELETE CASCADE;

--
-- Name: dialogs dialogs_user_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.dialogs
    ADD CONSTRAINT dialogs_user_id_fkey FOREIGN KEY (user_id) REFERENCES public.users(id) ON DELETE CASCADE;
